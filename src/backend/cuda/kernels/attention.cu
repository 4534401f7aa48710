// Causal attention for any number of queries, written for decode (one query per sequence over a
// long KV cache): grid (splits, heads, batch·tq), 4 warps a block. Each split takes an equal share of
// the keys; each warp takes every 4th key of the share, computes q·k with a warp reduction and keeps an
// online softmax (max m, sum l, weighted sum of v). The warps merge in shared memory. With one split
// the block writes the output; with several it writes (m, l, acc) and attention_combine merges them.
//
// Query i of this call sits at position kvLen - tq + i and sees keys j ≤ that position, j < kvLen.
// The score is q·k·scale - slope[h]·(pos - j) with ALiBi (slopes non-null); a key whose mask is 0
// (left padding) gets -1e30, as the original adds the dtype's minimum. kvLen = *kvLenDev + kvLenHost.
// HEAD_DIM is a compile-time option (-DHEAD_DIM=…).
#define NWARP 4
#define EPL ((HEAD_DIM + 31) / 32)
#include "online_softmax.cuh"

extern "C" __global__ void __launch_bounds__(NWARP * 32) attention_decode(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const int* __restrict__ mask,
    const float* __restrict__ slopes, T* __restrict__ out, float* __restrict__ partial,
    int tq, int nHeads, int capacity, const int* kvLenDev, int kvLenHost,
    int qStride, int kvStride, int oStride, float scale) {
  pdl_begin();  // DEPENDENT_LAUNCH (kernels.ts)
  const int split = blockIdx.x, nSplits = gridDim.x, h = blockIdx.y;
  const int bq = blockIdx.z, b = bq / tq, i = bq - b * tq;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int kvLen = kvLenHost + (kvLenDev ? *kvLenDev : 0);
  const int pos = kvLen - tq + i;
  const int keys = pos + 1;  // keys 0..pos
  const int share = (keys + nSplits - 1) / nSplits;
  const int j0 = split * share, j1 = min(keys, j0 + share);
  const float slope = slopes ? slopes[h] : 0.f;

  float qv[EPL];
  const T* qr = q + ((long long)b * tq + i) * qStride + h * HEAD_DIM;
#pragma unroll
  for (int e = 0; e < EPL; e++) { int c = lane * EPL + e; qv[e] = c < HEAD_DIM ? ld(qr[c]) * scale : 0.f; }

  SoftmaxState s = softmax_start();

  for (int j = j0 + warp; j < j1; j += NWARP) {
    const T* kr = k + ((long long)b * capacity + j) * kvStride + h * HEAD_DIM;
    const T* vr = v + ((long long)b * capacity + j) * kvStride + h * HEAD_DIM;
    float dot = 0.f, vv[EPL];
#pragma unroll
    for (int e = 0; e < EPL; e++) {
      int c = lane * EPL + e;
      dot += c < HEAD_DIM ? qv[e] * ld(kr[c]) : 0.f;
      vv[e] = c < HEAD_DIM ? ld(vr[c]) : 0.f;
    }
    dot = warp_sum(dot);
    float score = dot - slope * (float)(pos - j);
    if (mask && mask[(long long)b * capacity + j] == 0) score = -1e30f;
    softmax_fold(s, score, vv);
  }

  __shared__ SoftmaxShared<NWARP> shared;
  softmax_share(shared, s, warp, lane);
  if (warp != 0) return;
  softmax_merge(shared, s, lane);
  if (nSplits == 1) {
    softmax_store(out + ((long long)b * tq + i) * oStride + h * HEAD_DIM, s, lane);
  } else {
    // partial layout: [(bq·nHeads + h)·nSplits + split] × (2 + HEAD_DIM) floats
    softmax_store_partial(partial + (((long long)bq * nHeads + h) * nSplits + split) * (2 + HEAD_DIM), s, lane);
  }
}

// Merge the splits' (m, l, acc): grid (heads, batch·tq), HEAD_DIM threads (rounded up to 32).
extern "C" __global__ void attention_combine(const float* __restrict__ partial, T* __restrict__ out,
                                             int tq, int nHeads, int nSplits, int oStride) {
  pdl_begin();  // DEPENDENT_LAUNCH (kernels.ts)
  const int h = blockIdx.x, bq = blockIdx.y, b = bq / tq, i = bq - b * tq, c = threadIdx.x;
  const float* p = partial + ((long long)bq * nHeads + h) * nSplits * (2 + HEAD_DIM);
  float m = -INFINITY;
  for (int s = 0; s < nSplits; s++) m = fmaxf(m, p[s * (2 + HEAD_DIM)]);
  float l = 0.f, acc = 0.f;
  for (int s = 0; s < nSplits; s++) {
    const float* ps = p + s * (2 + HEAD_DIM);
    float f = ps[0] == -INFINITY ? 0.f : __expf(ps[0] - m);
    l += ps[1] * f;
    if (c < HEAD_DIM) acc += ps[2 + c] * f;
  }
  if (c < HEAD_DIM) out[((long long)b * tq + i) * oStride + h * HEAD_DIM + c] = st<T>(l > 0.f ? acc / l : 0.f);
}
