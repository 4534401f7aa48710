// LayerNorm over the last dimension, one block per row, the row held in registers (NPER values a
// thread, strided so that a warp's loads are contiguous): one read of the row, the mean, then the
// variance as the mean squared deviation from the registers, then (x - mean)·rstd·w + b.
// X is the input's type: float with MPT_X_F32 (the float32 residual stream of the bf16 decoder), else T.
// With `residual` set, x ← x + residual first (written back), so the add costs no pass of its own.
#ifdef MPT_X_F32
typedef float XT;
#else
typedef T XT;
#endif
#define NPER 16

extern "C" __global__ void layernorm(XT* __restrict__ x, const XT* __restrict__ residual, const T* __restrict__ w,
                                     const T* __restrict__ b, T* __restrict__ out, int d, float eps) {
  const long long row = blockIdx.x;
  XT* xr = x + row * d;
  float v[NPER];
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < NPER; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    float t = 0.f;
    if (i < d) {
      t = ld(xr[i]);
      if (residual) { t += ld(residual[row * d + i]); xr[i] = st<XT>(t); t = ld(xr[i]); }
    }
    v[j] = t;
    s += t;
  }
  const float mean = block_sum(s) / d;
  float q = 0.f;
#pragma unroll
  for (int j = 0; j < NPER; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < d) { const float t = v[j] - mean; q += t * t; }
  }
  const float rstd = rsqrtf(block_sum(q) / d + eps);
  T* o = out + row * d;
#pragma unroll
  for (int j = 0; j < NPER; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < d) {
      float y = (v[j] - mean) * rstd * ld(w[i]);
      if (b) y += ld(b[i]);
      o[i] = st<T>(y);
    }
  }
}
