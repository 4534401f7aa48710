// A warp's online softmax over keys for one query (the decode attention kernels, attention.cu and
// decode_attention.cu): the running max m, the sum l of exp(score − m), and the exp-weighted sum of the
// values, EPL of them a lane (lane λ holds head values λ·EPL …). EPL is the including file's.
struct SoftmaxState { float m, l, acc[EPL]; };

__device__ __forceinline__ SoftmaxState softmax_start() {
  SoftmaxState s;
  s.m = -INFINITY;
  s.l = 0.f;
#pragma unroll
  for (int e = 0; e < EPL; e++) s.acc[e] = 0.f;
  return s;
}

// One key's score and value folded in.
__device__ __forceinline__ void softmax_fold(SoftmaxState& s, float score, const float* vv) {
  const float mNew = fmaxf(s.m, score), alpha = __expf(s.m - mNew), p = __expf(score - mNew);
  s.l = s.l * alpha + p;
#pragma unroll
  for (int e = 0; e < EPL; e++) s.acc[e] = s.acc[e] * alpha + p * vv[e];
  s.m = mNew;
}

// The NWARPS warps' states merged through shared memory: every warp shares its state (then a block
// barrier), after which the other warps have nothing left to do and warp 0 merges, in warp order.
//   __shared__ SoftmaxShared<NW> shared;
//   softmax_share(shared, state, warp, lane);
//   if (warp != 0) return;
//   softmax_merge(shared, state, lane);
template <int NWARPS> struct SoftmaxShared { float m[NWARPS], l[NWARPS], acc[NWARPS][EPL * 32]; };

template <int NWARPS> __device__ __forceinline__ void softmax_share(SoftmaxShared<NWARPS>& sh, const SoftmaxState& s, int warp, int lane) {
  if (lane == 0) { sh.m[warp] = s.m; sh.l[warp] = s.l; }
#pragma unroll
  for (int e = 0; e < EPL; e++) sh.acc[warp][lane * EPL + e] = s.acc[e];
  __syncthreads();
}

template <int NWARPS> __device__ __forceinline__ void softmax_merge(const SoftmaxShared<NWARPS>& sh, SoftmaxState& s, int lane) {
  float m = -INFINITY;
  for (int w = 0; w < NWARPS; w++) m = fmaxf(m, sh.m[w]);
  float l = 0.f, acc[EPL];
#pragma unroll
  for (int e = 0; e < EPL; e++) acc[e] = 0.f;
  for (int w = 0; w < NWARPS; w++) {
    const float f = sh.m[w] == -INFINITY ? 0.f : __expf(sh.m[w] - m);
    l += sh.l[w] * f;
#pragma unroll
    for (int e = 0; e < EPL; e++) acc[e] += sh.acc[w][lane * EPL + e] * f;
  }
  s.m = m;
  s.l = l;
#pragma unroll
  for (int e = 0; e < EPL; e++) s.acc[e] = acc[e];
}

// The attention output, acc / l (0 for a query that saw no key), into a head's HEAD_DIM values at o.
__device__ __forceinline__ void softmax_store(T* o, const SoftmaxState& s, int lane) {
  const float inv = s.l > 0.f ? 1.f / s.l : 0.f;
#pragma unroll
  for (int e = 0; e < EPL; e++) { const int c = lane * EPL + e; if (c < HEAD_DIM) o[c] = st<T>(s.acc[e] * inv); }
}

// The state itself for a later merge of splits: p[0] = m, p[1] = l, p[2 …] = acc (2 + HEAD_DIM floats).
__device__ __forceinline__ void softmax_store_partial(float* p, const SoftmaxState& s, int lane) {
  if (lane == 0) { p[0] = s.m; p[1] = s.l; }
#pragma unroll
  for (int e = 0; e < EPL; e++) { const int c = lane * EPL + e; if (c < HEAD_DIM) p[2 + c] = s.acc[e]; }
}
