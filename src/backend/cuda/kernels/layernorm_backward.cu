// LayerNorm backward, per row of width n (mean and variance recomputed from x, as the forward has them):
//   x̂ = (x − mean)·rstd,  g = dy·w,  dx = rstd·(g − mean(g) − x̂·mean(g·x̂))
//   dw += Σ_rows dy·x̂,  db += Σ_rows dy
// A block takes rows blockIdx.x, blockIdx.x + gridDim.x, …; its share of dw and db gathers in shared
// memory (2n floats, dynamic) and goes to the float32 outputs (zeroed by the caller) with one atomic
// add a column per block, not one a row.
extern "C" __global__ void layernorm_backward(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                                              T* __restrict__ dx, float* __restrict__ dw, float* __restrict__ db, int rows, int n, float eps) {
  extern __shared__ float part[];  // [0, n): dw, [n, 2n): db
  for (int i = threadIdx.x; i < 2 * n; i += blockDim.x) part[i] = 0.f;
  __syncthreads();
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + (long long)r * n;
    const T* dyr = dy + (long long)r * n;
    float s = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += ld(xr[i]);
    const float mean = block_sum(s) / n;
    float q = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) { const float c = ld(xr[i]) - mean; q += c * c; }
    const float rstd = rsqrtf(block_sum(q) / n + eps);
    float sg = 0.f, sgx = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float xh = (ld(xr[i]) - mean) * rstd, d = ld(dyr[i]), g = d * ld(w[i]);
      sg += g;
      sgx += g * xh;
      part[i] += d * xh;
      part[n + i] += d;
    }
    const float meanG = block_sum(sg) / n, meanGX = block_sum(sgx) / n;
    T* dxr = dx + (long long)r * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float xh = (ld(xr[i]) - mean) * rstd;
      dxr[i] = st<T>(rstd * (ld(dyr[i]) * ld(w[i]) - meanG - xh * meanGX));
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    atomicAdd(dw + i, part[i]);
    if (db) atomicAdd(db + i, part[n + i]);
  }
}

// The same gradients for rows of width n % 8 == 0, one warp a row, 16-byte accesses; dx + residual is
// written (the residual stream's gradient around the norm, when `residual` is not null) and the row
// sums for dw (and db with LN_BIAS) are kept per lane in registers (a lane always owns the same columns:
// chunks lane, lane + 32, …, LN_CH of them), then summed over the block's warps in a fixed order and
// written to partial[block, n] (and partial[gridDim.x + block, n] for db): layernorm_dw_sum adds those
// into the float32 accumulators, block by block in order. No atomics: the result is deterministic.
// x is read once (held in registers as stored), dy and w once for the sums and again (from L1/L2) for dx.
#ifndef LN_CH
#define LN_CH 1
#endif
// Blocks an SM the registers are bounded for (3: ~165 registers, no spills; 4: 128, a few spills to L1).
#ifndef LN_MIN_BLOCKS
#define LN_MIN_BLOCKS 3
#endif
// A chunk of 8 values as stored (one 16-byte word in bf16, two in float32): the row's x is held this
// way between passes, so bf16 rows cost half the registers of floats (more blocks an SM).
struct Chunk { uint4 u[sizeof(T) / 2]; };
__device__ __forceinline__ void unpack8(const Chunk& c, float* v) { load8(reinterpret_cast<const T*>(&c), v); }

extern "C" __global__ void __launch_bounds__(128, LN_MIN_BLOCKS) layernorm_backward_rows(const T* __restrict__ dy, const T* __restrict__ x,
    const T* __restrict__ w, const T* __restrict__ residual, T* __restrict__ dx, float* __restrict__ partial, int rows, int n, float eps) {
  extern __shared__ float acc[];  // [n] dw (and [n, 2n) db): the block's sums
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5, chunks = n >> 3;
  float dw[LN_CH][8];
#ifdef LN_BIAS
  float db[LN_CH][8];
#endif
#pragma unroll
  for (int j = 0; j < LN_CH; j++)
#pragma unroll
    for (int e = 0; e < 8; e++) {
      dw[j][e] = 0.f;
#ifdef LN_BIAS
      db[j][e] = 0.f;
#endif
    }
  for (long long r = (long long)blockIdx.x * warps + warp; r < rows; r += (long long)gridDim.x * warps) {
    const T* xr = x + r * n;
    const T* dyr = dy + r * n;
    Chunk xc[LN_CH];
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < LN_CH; j++) {
      const int c = lane + 32 * j;
      if (c < chunks) {
        xc[j] = *reinterpret_cast<const Chunk*>(xr + 8 * c);
        float v[8];
        unpack8(xc[j], v);
#pragma unroll
        for (int e = 0; e < 8; e++) s += v[e];
      }
    }
    const float mean = warp_sum(s) / n;
    float q = 0.f;
#pragma unroll
    for (int j = 0; j < LN_CH; j++) {
      if (lane + 32 * j < chunks) {
        float v[8];
        unpack8(xc[j], v);
#pragma unroll
        for (int e = 0; e < 8; e++) { const float u = v[e] - mean; q += u * u; }
      }
    }
    const float rstd = rsqrtf(warp_sum(q) / n + eps);
    float sg = 0.f, sgx = 0.f;
#pragma unroll
    for (int j = 0; j < LN_CH; j++) {
      const int c = lane + 32 * j;
      if (c < chunks) {
        float v[8], d[8], wv[8];
        unpack8(xc[j], v);
        load8(dyr + 8 * c, d);
        load8(w + 8 * c, wv);
#pragma unroll
        for (int e = 0; e < 8; e++) {
          const float h = (v[e] - mean) * rstd, g = d[e] * wv[e];
          sg += g;
          sgx += g * h;
          dw[j][e] += d[e] * h;
#ifdef LN_BIAS
          db[j][e] += d[e];
#endif
        }
      }
    }
    const float meanG = warp_sum(sg) / n, meanGX = warp_sum(sgx) / n;
#pragma unroll
    for (int j = 0; j < LN_CH; j++) {
      const int c = lane + 32 * j;
      if (c < chunks) {
        float v[8], d[8], wv[8], res[8], o[8];
        unpack8(xc[j], v);
        load8(dyr + 8 * c, d);
        load8(w + 8 * c, wv);
        if (residual) load8(residual + r * n + 8 * c, res);
#pragma unroll
        for (int e = 0; e < 8; e++) o[e] = rstd * (d[e] * wv[e] - meanG - (v[e] - mean) * rstd * meanGX) + (residual ? res[e] : 0.f);
        store8(dx + r * n + 8 * c, o);
      }
    }
  }
  // The block's sums: warp 0 writes, warps 1, 2, … add in turn.
  for (int wp = 0; wp < warps; wp++) {
    if (warp == wp) {
#pragma unroll
      for (int j = 0; j < LN_CH; j++) {
        const int c = lane + 32 * j;
        if (c < chunks) {
#pragma unroll
          for (int e = 0; e < 8; e++) {
            acc[8 * c + e] = wp == 0 ? dw[j][e] : acc[8 * c + e] + dw[j][e];
#ifdef LN_BIAS
            acc[n + 8 * c + e] = wp == 0 ? db[j][e] : acc[n + 8 * c + e] + db[j][e];
#endif
          }
        }
      }
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    partial[(long long)blockIdx.x * n + i] = acc[i];
#ifdef LN_BIAS
    partial[(long long)(gridDim.x + blockIdx.x) * n + i] = acc[n + i];
#endif
  }
}

// dw[i] += Σ_b partial[b, i] over `blocks` block sums (and db[i] from the next `blocks` rows). A thread
// block takes 32 columns; its 8 warps sum every 8th block sum (warp s: s, s + 8, …), then warp 0 adds
// the 8 in order: fixed order, so deterministic, with 8× the loads in flight of a thread a column.
extern "C" __global__ void layernorm_dw_sum(const float* __restrict__ partial, int blocks, int n, float* __restrict__ dw, float* __restrict__ db) {
  __shared__ float part[2][8][32];
  const int lane = threadIdx.x & 31, s = threadIdx.x >> 5, i = blockIdx.x * 32 + lane;
  float a = 0.f, c = 0.f;
  if (i < n) {
    for (int b = s; b < blocks; b += 8) {
      a += partial[(long long)b * n + i];
      if (db) c += partial[(long long)(blocks + b) * n + i];
    }
  }
  part[0][s][lane] = a;
  part[1][s][lane] = c;
  __syncthreads();
  if (s != 0 || i >= n) return;
  float ta = 0.f, tc = 0.f;
#pragma unroll
  for (int k = 0; k < 8; k++) { ta += part[0][k][lane]; tc += part[1][k][lane]; }
  dw[i] += ta;
  if (db) db[i] += tc;
}
