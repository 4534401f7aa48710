// One decode step's attention with the QKV split folded in (the kernel of qkv.cu it replaces in a
// decode step): grid (splits, heads, batch), NW warps a block, one new token a row at position
// pos = *posDev, keys 0..pos.
//
// qkv [batch, 3d] is the QKV GEMM's output, already clamped (clip_qkv) by its epilogue, and `stats`
// [batch, 3d/16] its per-16-column (mean, M2) pairs (skinny_gemm.cu statsOut). With qkLn, q and k are
// LayerNormed over the full d from those statistics (merge_row_stats: no reduction over the row here),
// rounded to T as qkv_split would store them; every warp merges them itself, so no barrier comes first.
//
// Latency, not work, is what this kernel costs at small batch (a few hundred keys), so it keeps the
// chain of dependent memory round trips after griddepcontrol.wait short (the QK LayerNorm weights are
// loaded before it as well):
// - the keys before pos come from earlier steps, which finished before this step's first kernel
//   (the embedding gather is launched without programmatic serialization: kernels.ts), so each warp
//   issues its first U keys' loads BEFORE the wait, under the QKV GEMM that precedes this kernel;
// - the new key pos is never read back from the cache: the warp that folds it in (warp 0 of the split
//   holding pos) uses the k and v it computes from qkv, and also writes them into the caches;
// - `perSplit` > 0: only ceil(keys / perSplit) of the grid's splits work (the rest return at once), so
//   a short context runs as one block a head with no merge at all; 0 spreads the keys over the grid.
//
// The loop: each warp takes every NW-th key of the block's share, U keys at a time (their loads all
// issued before any is used), q·k by a warp reduction, an online softmax (max m, sum l, weighted sum of
// v); the warps merge in shared memory. One working split writes `out`; several write (m, l, acc) to
// `partial` and count themselves in counters[b·heads + h] (zero between launches): the last split of a
// head to arrive merges all of them in split order (so the result does not depend on arrival order),
// writes `out` and resets the counter. HEAD_DIM is a compile-time option.
#define NW 8
#ifndef ATT_U
#define ATT_U 8
#endif
#define U ATT_U
#define EPL ((HEAD_DIM + 31) / 32)
#include "online_softmax.cuh"
#ifdef MPT_BF16
#define T_BYTES 2
#else
#define T_BYTES 4
#endif
// A lane's EPL consecutive values of a head's row, loaded in one access where they fill 4, 8 or 16
// aligned bytes (d and the head offset are multiples of EPL then).
#if HEAD_DIM % EPL == 0 && (EPL * T_BYTES == 4 || EPL * T_BYTES == 8 || EPL * T_BYTES == 16)
#define VEC_FRAG 1
struct __align__(EPL * T_BYTES) Frag { T v[EPL]; };
#else
#define VEC_FRAG 0
struct Frag { T v[EPL]; };
#endif
__device__ __forceinline__ Frag load_frag(const T* p, int lane, bool ok) {
  Frag f;
#if VEC_FRAG
  if (ok && lane * EPL < HEAD_DIM) f = *reinterpret_cast<const Frag*>(p + lane * EPL);
  else {
#pragma unroll
    for (int e = 0; e < EPL; e++) f.v[e] = st<T>(0.f);
  }
#else
#pragma unroll
  for (int e = 0; e < EPL; e++) f.v[e] = ok && lane * EPL + e < HEAD_DIM ? p[lane * EPL + e] : st<T>(0.f);
#endif
  return f;
}

extern "C" __global__ void __launch_bounds__(NW * 32) attention_decode_qkv(
    const T* __restrict__ qkv, const float2* __restrict__ stats, const T* qw, const T* qb, const T* kw, const T* kb,
    T* __restrict__ kCache, T* __restrict__ vCache, const int* __restrict__ mask, const float* __restrict__ slopes,
    T* __restrict__ out, float* __restrict__ partial, int* __restrict__ counters, int d, int nHeads, int capacity, const int* posDev, int qkLn,
    float eps, float scale, int perSplit) {
  const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // Before the wait: only what no kernel of this step writes (the position, the older keys, the mask
  // and the constants).
  const int pos = *posDev, keys = pos + 1;
  const int nSplits = perSplit > 0 ? min((int)gridDim.x, (keys + perSplit - 1) / perSplit) : gridDim.x;
  pdl_trigger();
  if (split >= nSplits) return;  // this step's context is short: the splits before this one hold it
  const int share = (keys + nSplits - 1) / nSplits;
  const int j0 = split * share, j1 = min(keys, j0 + share);
  const int jc = min(j1, pos);  // the keys of this share already in the cache
  const bool holdsPos = j0 <= pos && pos < j1;
  const float slope = slopes ? slopes[h] : 0.f;
  const T* kHead = kCache + (long long)b * capacity * d + h * HEAD_DIM;
  const T* vHead = vCache + (long long)b * capacity * d + h * HEAD_DIM;
  Frag kf[U], vf[U];
  auto loadKeys = [&](int jb) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int j = jb + u * NW;
      const bool ok = j < jc;
      kf[u] = load_frag(kHead + (long long)(ok ? j : 0) * d, lane, ok);
      vf[u] = load_frag(vHead + (long long)(ok ? j : 0) * d, lane, ok);
    }
  };
  loadKeys(j0 + warp);
  // The QK LayerNorm's weights: constants too.
  float qwv[EPL], qbv[EPL], kwv[EPL], kbv[EPL];
#pragma unroll
  for (int e = 0; e < EPL; e++) {
    const int c = lane * EPL + e, col = h * HEAD_DIM + c;
    const bool ok = qkLn && c < HEAD_DIM, okK = ok && holdsPos && warp == 0;
    qwv[e] = ok ? ld(qw[col]) : 0.f;
    qbv[e] = ok && qb ? ld(qb[col]) : 0.f;
    kwv[e] = okK ? ld(kw[col]) : 0.f;
    kbv[e] = okK && kb ? ld(kb[col]) : 0.f;
  }
  pdl_wait();  // DEPENDENT_LAUNCH (kernels.ts): qkv and its statistics are the QKV GEMM's

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
      if (qkLn) x = ld(st<T>((x - qMean) * qRstd * qwv[e] + qbv[e]));
    }
    qv[e] = x * scale;
  }

  SoftmaxState state = softmax_start();  // this warp's online softmax (online_softmax.cuh)
  for (int jb = j0 + warp; jb < jc; jb += NW * U) {
    if (jb != j0 + warp) loadKeys(jb);
    float dot[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      float s = 0.f;
#pragma unroll
      for (int e = 0; e < EPL; e++) s += qv[e] * ld(kf[u].v[e]);
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
      if (j >= jc) break;
      float score = dot[u] - slope * (float)(pos - j);
      if (mask && mask[(long long)b * capacity + j] == 0) score = -1e30f;
      float vv[EPL];
#pragma unroll
      for (int e = 0; e < EPL; e++) vv[e] = ld(vf[u].v[e]);
      softmax_fold(state, score, vv);
    }
  }
  if (holdsPos && warp == 0) {
    // The new key: LayerNormed and rounded as the cache stores it, folded in last by this warp.
    float kMean = 0.f, kRstd = 1.f;
    if (qkLn) merge_row_stats(stats + (long long)b * 3 * tiles + tiles, tiles, d, eps, kMean, kRstd);
    const long long at = ((long long)b * capacity + pos) * d;
    float s = 0.f, vv[EPL];
#pragma unroll
    for (int e = 0; e < EPL; e++) {
      const int c = lane * EPL + e, col = h * HEAD_DIM + c;
      vv[e] = 0.f;
      if (c < HEAD_DIM) {
        float k = ld(row[d + col]);
        if (qkLn) k = (k - kMean) * kRstd * kwv[e] + kbv[e];
        const T kT = st<T>(k), vT = row[2 * d + col];
        kCache[at + col] = kT;
        vCache[at + col] = vT;
        s += qv[e] * ld(kT);
        vv[e] = ld(vT);
      }
    }
    s = warp_sum(s);
    float score = s;  // pos − j = 0: no ALiBi bias
    if (mask && mask[(long long)b * capacity + pos] == 0) score = -1e30f;
    softmax_fold(state, score, vv);
  }

  __shared__ SoftmaxShared<NW> shared;
  softmax_share(shared, state, warp, lane);
  if (warp != 0) return;
  softmax_merge(shared, state, lane);
  if (nSplits == 1) {
    softmax_store(out + (long long)b * d + h * HEAD_DIM, state, lane);
    return;
  }
  softmax_store_partial(partial + (((long long)b * nHeads + h) * gridDim.x + split) * (2 + HEAD_DIM), state, lane);
  __threadfence();  // this split's partial is visible device-wide before it is counted
  int arrived = 0;
  if (lane == 0) arrived = atomicAdd(counters + b * nHeads + h, 1);
  if (__shfl_sync(0xffffffffu, arrived, 0) != nSplits - 1) return;
  __threadfence();
  const float* all = partial + ((long long)b * nHeads + h) * gridDim.x * (2 + HEAD_DIM);
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
