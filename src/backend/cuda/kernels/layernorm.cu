// LayerNorm over the last dimension, one block per row: mean, then the variance as the mean squared
// deviation (two passes over the row, which stays in L1), then (x - mean)·rstd·w + b.
// With `residual` set, x ← x + residual first (written back), so the add costs no pass of its own.
extern "C" __global__ void layernorm(T* __restrict__ x, const T* __restrict__ residual, const T* __restrict__ w,
                                     const T* __restrict__ b, T* __restrict__ out, int d, float eps) {
  long long row = blockIdx.x;
  T* xr = x + row * d;
  if (residual) {
    const T* rr = residual + row * d;
    for (int i = threadIdx.x; i < d; i += blockDim.x) xr[i] = st<T>(ld(xr[i]) + ld(rr[i]));
    __syncthreads();
  }
  float s = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) s += ld(xr[i]);
  float mean = block_sum(s) / d;
  float v = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) { float t = ld(xr[i]) - mean; v += t * t; }
  float rstd = rsqrtf(block_sum(v) / d + eps);
  T* o = out + row * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float y = (ld(xr[i]) - mean) * rstd * ld(w[i]);
    if (b) y += ld(b[i]);
    o[i] = st<T>(y);
  }
}
