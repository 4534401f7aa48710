// After the fused QKV projection: one row [q | k | v] (each d wide) → clamp to ±clip (clip > 0),
// LayerNorm of q and of k over the full d (qk_ln: weight, optional bias), q to q_out [rows, d], and
// k, v into the KV caches [batch, capacity, d] at position at + (row mod t), at = *atDev + atHost
// (atDev may be null). Grid (rows, 3): blockIdx.y picks q, k or v, so a decode step's single row
// still spreads over three blocks; each row part is held in registers (NPER values a thread).
#define NPER 16
extern "C" __global__ void qkv_split(const T* __restrict__ qkv, T* __restrict__ qOut, T* __restrict__ kCache, T* __restrict__ vCache,
                                     const T* qw, const T* qb, const T* kw, const T* kb, int t, int d, int capacity,
                                     const int* atDev, int atHost, float clip, int qkLn, float eps) {
  pdl_begin();  // DEPENDENT_LAUNCH (kernels.ts)
  const long long row = blockIdx.x;
  const int part = blockIdx.y;
  const int bIdx = (int)(row / t), j = (int)(row - (long long)bIdx * t);
  const int at = atHost + (atDev ? *atDev : 0);
  const long long cacheRow = (long long)bIdx * capacity + at + j;
  const T* src = qkv + row * 3 * d + (long long)part * d;
  T* dst = part == 0 ? qOut + row * d : (part == 1 ? kCache : vCache) + cacheRow * d;
  float v[NPER];
  float s = 0.f;
#pragma unroll
  for (int e = 0; e < NPER; e++) {
    const int i = threadIdx.x + e * blockDim.x;
    float x = i < d ? ld(src[i]) : 0.f;
    if (clip > 0.f) x = fminf(fmaxf(x, -clip), clip);
    // The original rounds the clamped tensor to its dtype before the LayerNorm reads it.
    x = ld(st<T>(x));
    v[e] = x;
    s += x;
  }
  if (part == 2 || !qkLn) {
#pragma unroll
    for (int e = 0; e < NPER; e++) { const int i = threadIdx.x + e * blockDim.x; if (i < d) dst[i] = st<T>(v[e]); }
    return;  // uniform per block: no thread of this block reaches the reductions below
  }
  const T* w = part == 0 ? qw : kw;
  const T* b = part == 0 ? qb : kb;
  const float mean = block_sum(s) / d;
  float q = 0.f;
#pragma unroll
  for (int e = 0; e < NPER; e++) { const int i = threadIdx.x + e * blockDim.x; if (i < d) { const float u = v[e] - mean; q += u * u; } }
  const float rstd = rsqrtf(block_sum(q) / d + eps);
#pragma unroll
  for (int e = 0; e < NPER; e++) {
    const int i = threadIdx.x + e * blockDim.x;
    if (i < d) {
      float y = (v[e] - mean) * rstd * ld(w[i]);
      if (b) y += ld(b[i]);
      dst[i] = st<T>(y);
    }
  }
}

// The same for d % 8 == 0 with 16-byte accesses: thread i holds chunks i and i + blockDim.x of 8 values.
extern "C" __global__ void qkv_split8(const T* __restrict__ qkv, T* __restrict__ qOut, T* __restrict__ kCache, T* __restrict__ vCache,
                                      const T* qw, const T* qb, const T* kw, const T* kb, int t, int d, int capacity,
                                      const int* atDev, int atHost, float clip, int qkLn, float eps) {
  pdl_begin();  // DEPENDENT_LAUNCH (kernels.ts)
  const long long row = blockIdx.x;
  const int part = blockIdx.y, chunks = d / 8;
  const int bIdx = (int)(row / t), j0 = (int)(row - (long long)bIdx * t);
  const int at = atHost + (atDev ? *atDev : 0);
  const long long cacheRow = (long long)bIdx * capacity + at + j0;
  const T* src = qkv + row * 3 * d + (long long)part * d;
  T* dst = part == 0 ? qOut + row * d : (part == 1 ? kCache : vCache) + cacheRow * d;
  float v[2][8];
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < 2; j++) {
    const int c = threadIdx.x + j * blockDim.x;
#pragma unroll
    for (int e = 0; e < 8; e++) v[j][e] = 0.f;
    if (c < chunks) {
      load8(src + 8 * c, v[j]);
#pragma unroll
      for (int e = 0; e < 8; e++) {
        float x = v[j][e];
        if (clip > 0.f) x = fminf(fmaxf(x, -clip), clip);
        v[j][e] = ld(st<T>(x));  // rounded to the dtype before the LayerNorm reads it, as the original
        s += v[j][e];
      }
    }
  }
  if (part == 2 || !qkLn) {
#pragma unroll
    for (int j = 0; j < 2; j++) { const int c = threadIdx.x + j * blockDim.x; if (c < chunks) store8(dst + 8 * c, v[j]); }
    return;  // uniform per block
  }
  const T* w = part == 0 ? qw : kw;
  const T* b = part == 0 ? qb : kb;
  const float mean = block_sum(s) / d;
  float q = 0.f;
#pragma unroll
  for (int j = 0; j < 2; j++) {
    if (threadIdx.x + j * blockDim.x < chunks) {
#pragma unroll
      for (int e = 0; e < 8; e++) { const float u = v[j][e] - mean; q += u * u; }
    }
  }
  const float rstd = rsqrtf(block_sum(q) / d + eps);
#pragma unroll
  for (int j = 0; j < 2; j++) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < chunks) {
      float wv[8], bv[8], y[8];
      load8(w + 8 * c, wv);
      if (b) load8(b + 8 * c, bv);
#pragma unroll
      for (int e = 0; e < 8; e++) y[e] = (v[j][e] - mean) * rstd * wv[e] + (b ? bv[e] : 0.f);
      store8(dst + 8 * c, y);
    }
  }
}
