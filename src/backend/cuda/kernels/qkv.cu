// After the fused QKV projection: split one row [q | k | v] (each d wide), clamp to ±clip when clip > 0,
// LayerNorm q and k over the full d (qk_ln, weight and optional bias), and write q to q_out [rows, d]
// and k, v into the KV caches [batch, capacity, d] at position at + (row mod t),
// at = *atDev + atHost (atDev may be null). One block per row.
__device__ void norm_into(const float* src, T* dst, const T* w, const T* b, int d, float eps, int ln) {
  if (!ln) { for (int i = threadIdx.x; i < d; i += blockDim.x) dst[i] = st<T>(src[i]); return; }
  float s = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) s += src[i];
  float mean = block_sum(s) / d;
  float v = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) { float t = src[i] - mean; v += t * t; }
  float rstd = rsqrtf(block_sum(v) / d + eps);
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    float y = (src[i] - mean) * rstd * ld(w[i]);
    if (b) y += ld(b[i]);
    dst[i] = st<T>(y);
  }
}
extern "C" __global__ void qkv_split(const T* __restrict__ qkv, T* __restrict__ qOut, T* __restrict__ kCache, T* __restrict__ vCache,
                                     const T* qw, const T* qb, const T* kw, const T* kb, int t, int d, int capacity,
                                     const int* atDev, int atHost, float clip, int qkLn, float eps) {
  extern __shared__ float buf[];  // 2·d floats: q and k of this row after the clamp
  long long row = blockIdx.x;
  int bIdx = (int)(row / t), j = (int)(row - (long long)bIdx * t);
  int at = atHost + (atDev ? *atDev : 0);
  long long cacheRow = (long long)bIdx * capacity + at + j;
  const T* src = qkv + row * 3 * d;
  for (int i = threadIdx.x; i < 3 * d; i += blockDim.x) {
    float x = ld(src[i]);
    if (clip > 0.f) x = fminf(fmaxf(x, -clip), clip);
    if (i < 2 * d) buf[i] = x;
    else vCache[cacheRow * d + (i - 2 * d)] = st<T>(x);
  }
  __syncthreads();
#ifdef MPT_BF16
  // The original code rounds the clamped q and k to bf16 before its low-precision LayerNorm reads them.
  for (int i = threadIdx.x; i < 2 * d; i += blockDim.x) buf[i] = __bfloat162float(__float2bfloat16_rn(buf[i]));
  __syncthreads();
#endif
  norm_into(buf, qOut + row * d, qw, qb, d, eps, qkLn);
  norm_into(buf + d, kCache + cacheRow * d, kw, kb, d, eps, qkLn);
}
