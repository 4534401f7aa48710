// One decode step's attention with the QKV split folded in (the kernel of qkv.cu it replaces in a
// decode step): grid (splits, heads, batch), NW warps a block, one new token a row at position
// pos = *posDev, keys 0..pos.
//
// qkv [batch, 3d] is the QKV GEMM's output, already clamped (clip_qkv) by its epilogue, and `stats`
// [batch, 3d/16] its per-16-column (mean, M2) pairs (skinny_gemm.cu statsOut). With qkLn, q and k are
// LayerNormed over the full d from those statistics (merge_row_stats: no reduction over the row here),
// rounded to T as qkv_split would store them; every warp merges them itself, so no barrier comes first.
// The block whose share of keys holds pos writes this head's new k and v into the caches, then a
// barrier makes them visible to its other warps; the other splits never read position pos.
//
// The loop: each warp takes every NW-th key of the block's share, U keys at a time (their loads all
// issued before any is used), q·k by a warp reduction, an online softmax (max m, sum l, weighted sum of
// v); the warps merge in shared memory. One split writes `out`; several write (m, l, acc) to `partial`
// and count themselves in counters[b·heads + h] (zero between launches): the last split of a head to
// arrive merges all of them in split order (so the result does not depend on arrival order), writes
// `out` and resets the counter. HEAD_DIM is a compile-time option.
#define NW 8
#define U 4
#define EPL ((HEAD_DIM + 31) / 32)

extern "C" __global__ void __launch_bounds__(NW * 32) attention_decode_qkv(
    const T* __restrict__ qkv, const float2* __restrict__ stats, const T* qw, const T* qb, const T* kw, const T* kb,
    T* __restrict__ kCache, T* __restrict__ vCache, const int* __restrict__ mask, const float* __restrict__ slopes,
    T* __restrict__ out, float* __restrict__ partial, int* __restrict__ counters, int d, int nHeads, int capacity, const int* posDev, int qkLn,
    float eps, float scale) {
  pdl_begin();  // DEPENDENT_LAUNCH (kernels.ts)
  const int split = blockIdx.x, nSplits = gridDim.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int pos = *posDev, keys = pos + 1;
  const int share = (keys + nSplits - 1) / nSplits;
  const int j0 = split * share, j1 = min(keys, j0 + share);
  const float slope = slopes ? slopes[h] : 0.f;
  const T* row = qkv + (long long)b * 3 * d;
  const int tiles = d / 16;

  float qMean = 0.f, qRstd = 1.f;
  if (qkLn) merge_row_stats(stats + (long long)b * 3 * tiles, tiles, d, eps, qMean, qRstd);
  float qv[EPL];
#pragma unroll
  for (int e = 0; e < EPL; e++) {
    const int c = lane * EPL + e, col = h * HEAD_DIM + c;
    float x = 0.f;
    if (c < HEAD_DIM) {
      x = ld(row[col]);
      if (qkLn) x = ld(st<T>((x - qMean) * qRstd * ld(qw[col]) + (qb ? ld(qb[col]) : 0.f)));
    }
    qv[e] = x * scale;
  }
  if (j0 <= pos && pos < j1) {
    if (warp == 0) {
      float kMean = 0.f, kRstd = 1.f;
      if (qkLn) merge_row_stats(stats + (long long)b * 3 * tiles + tiles, tiles, d, eps, kMean, kRstd);
      const long long at = ((long long)b * capacity + pos) * d;
#pragma unroll
      for (int e = 0; e < EPL; e++) {
        const int c = lane * EPL + e, col = h * HEAD_DIM + c;
        if (c < HEAD_DIM) {
          float k = ld(row[d + col]);
          if (qkLn) k = (k - kMean) * kRstd * ld(kw[col]) + (kb ? ld(kb[col]) : 0.f);
          kCache[at + col] = st<T>(k);
          vCache[at + col] = row[2 * d + col];
        }
      }
    }
    __syncthreads();  // uniform: the whole block has the same j0, j1
  }

  float m = -INFINITY, l = 0.f, acc[EPL];
#pragma unroll
  for (int e = 0; e < EPL; e++) acc[e] = 0.f;
  for (int jb = j0 + warp; jb < j1; jb += NW * U) {
    float kk[U][EPL], vv[U][EPL], dot[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int j = jb + u * NW;
      const bool ok = j < j1;
      const long long at = ((long long)b * capacity + (ok ? j : j0)) * d + h * HEAD_DIM;
#pragma unroll
      for (int e = 0; e < EPL; e++) {
        const int c = lane * EPL + e;
        kk[u][e] = ok && c < HEAD_DIM ? ld(kCache[at + c]) : 0.f;
        vv[u][e] = ok && c < HEAD_DIM ? ld(vCache[at + c]) : 0.f;
      }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      float s = 0.f;
#pragma unroll
      for (int e = 0; e < EPL; e++) s += qv[e] * kk[u][e];
      dot[u] = s;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
      for (int u = 0; u < U; u++) dot[u] += __shfl_xor_sync(0xffffffffu, dot[u], o);
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int j = jb + u * NW;
      if (j >= j1) break;
      float score = dot[u] - slope * (float)(pos - j);
      if (mask && mask[(long long)b * capacity + j] == 0) score = -1e30f;
      const float mNew = fmaxf(m, score), alpha = __expf(m - mNew), p = __expf(score - mNew);
      l = l * alpha + p;
#pragma unroll
      for (int e = 0; e < EPL; e++) acc[e] = acc[e] * alpha + p * vv[u][e];
      m = mNew;
    }
  }

  __shared__ float sm[NW], sl[NW], sacc[NW][EPL * 32];
  if (lane == 0) { sm[warp] = m; sl[warp] = l; }
#pragma unroll
  for (int e = 0; e < EPL; e++) sacc[warp][lane * EPL + e] = acc[e];
  __syncthreads();
  if (warp != 0) return;
  float mAll = -INFINITY;
  for (int w = 0; w < NW; w++) mAll = fmaxf(mAll, sm[w]);
  float lAll = 0.f, a[EPL];
#pragma unroll
  for (int e = 0; e < EPL; e++) a[e] = 0.f;
  for (int w = 0; w < NW; w++) {
    const float f = sm[w] == -INFINITY ? 0.f : __expf(sm[w] - mAll);
    lAll += sl[w] * f;
#pragma unroll
    for (int e = 0; e < EPL; e++) a[e] += sacc[w][lane * EPL + e] * f;
  }
  if (nSplits == 1) {
    T* o = out + (long long)b * d + h * HEAD_DIM;
    const float inv = lAll > 0.f ? 1.f / lAll : 0.f;
#pragma unroll
    for (int e = 0; e < EPL; e++) { const int c = lane * EPL + e; if (c < HEAD_DIM) o[c] = st<T>(a[e] * inv); }
    return;
  }
  float* mine = partial + (((long long)b * nHeads + h) * nSplits + split) * (2 + HEAD_DIM);
  if (lane == 0) { mine[0] = mAll; mine[1] = lAll; }
#pragma unroll
  for (int e = 0; e < EPL; e++) { const int c = lane * EPL + e; if (c < HEAD_DIM) mine[2 + c] = a[e]; }
  __threadfence();  // this split's partial is visible device-wide before it is counted
  int arrived = 0;
  if (lane == 0) arrived = atomicAdd(counters + b * nHeads + h, 1);
  if (__shfl_sync(0xffffffffu, arrived, 0) != nSplits - 1) return;
  __threadfence();
  const float* all = partial + ((long long)b * nHeads + h) * nSplits * (2 + HEAD_DIM);
  float mMax = -INFINITY;
  for (int s = 0; s < nSplits; s++) mMax = fmaxf(mMax, __ldcg(all + s * (2 + HEAD_DIM)));
  float lSum = 0.f, o[EPL];
#pragma unroll
  for (int e = 0; e < EPL; e++) o[e] = 0.f;
  for (int s = 0; s < nSplits; s++) {
    const float* ps = all + s * (2 + HEAD_DIM);
    const float ms = __ldcg(ps);
    const float f = ms == -INFINITY ? 0.f : __expf(ms - mMax);
    lSum += __ldcg(ps + 1) * f;
#pragma unroll
    for (int e = 0; e < EPL; e++) { const int c = lane * EPL + e; if (c < HEAD_DIM) o[e] += __ldcg(ps + 2 + c) * f; }
  }
  T* dst = out + (long long)b * d + h * HEAD_DIM;
#pragma unroll
  for (int e = 0; e < EPL; e++) { const int c = lane * EPL + e; if (c < HEAD_DIM) dst[c] = st<T>(lSum > 0.f ? o[e] / lSum : 0.f); }
  if (lane == 0) counters[b * nHeads + h] = 0;
}
