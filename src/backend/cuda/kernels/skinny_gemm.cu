// y[r, o] (+)= Σ_k x[r, k]·w[o, k] (+ bias[o]) (→ exact GELU) for a few rows r < R ≤ 8·ROW_TILES: the
// GEMMs of a decode step, which only stream the weights. bf16 operands, fp32 accumulation on the
// tensor cores (mma.sync m16n8k16: 16 outputs × 8 rows a tile), y bf16 or float32 (MPT_Y_F32).
//
// A block owns 16 outputs; its warps split K. Each thread loads 16 bytes of two weight rows and of
// each x row per 32 k, and feeds them to two mmas: the k order inside the 32 is permuted the same way
// for both operands (thread t's 8 values are k+8t … k+8t+7), which leaves the sum unchanged and makes
// every load 16 bytes wide. The warps' partial tiles meet in shared memory, where the epilogue runs.
//
// Row statistics for the LayerNorm after a GEMM, without a kernel of their own (decode): with
// `statsOut` the epilogue writes, for every row r and this block's 16 outputs, the mean and the sum of
// squared deviations (M2) of the values it stored, as float2 statsOut[r·(O/16) + blockIdx.x] (O % 16 == 0).
// A consumer merges a row's O/16 pairs in a fixed order (Chan et al.: M2 = Σ M2_t + 16·Σ (mean_t − mean)²),
// so the result is deterministic and needs no second pass over the row. `clip` > 0 clamps the stored
// values to ±clip after rounding (clip_qkv), as the original clamps the rounded QKV output.
//
// With MPT_LN_X the kernel also does the LayerNorm before it (the decoder's ln_1 → QKV, ln_2 → up,
// ln_f → logits): x is then the float32 residual stream, `statsIn` its row statistics (written by the
// GEMM that last added into it), and each warp normalizes its K slice of the R rows into shared memory
// as bf16 (what the layernorm kernel would have written) while its first weight loads are in flight:
// one L2 round trip for the statistics and x together, no reductions over x. (Computing the statistics
// in every block instead was measured slower than a LayerNorm kernel of its own: bench/RESULTS-cuda.md.)
//
// One row tile only. (At two row tiles, 9–16 rows, the prologue would need the whole normalized x in
// shared memory, 64 KB a block; a variant that normalized float32 x in registers inside the main loop
// instead, LN_IN_LOOP, lost badly at batch 16 on the H100, 2026-11-28: 10,938 tokens/s with LN_f fused
// too and 11,059 without, against 11,628 for the LayerNorm kernel + plain GEMM. Deleted.)
typedef __nv_bfloat16 bf16;
#if defined(MPT_LN_X) && ROW_TILES != 1
#error "the LayerNorm prologue (MPT_LN_X) is for one row tile"
#endif
#ifdef MPT_LN_X
typedef float XIN;
#else
typedef bf16 XIN;
#endif
#ifdef MPT_Y_F32
typedef float YT;
#else
typedef bf16 YT;
#endif

#include "mbarrier.cuh"  // the MPT_SMEM_W variant's weight copies complete on one

__device__ __forceinline__ void mma16816(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// One load group's products: U k-steps of 32 (two m16n8k16 each) for each of the R row tiles; a0/a1 the
// warp's two 8-row weight fragments, b the row tiles' x fragments.
template <int U, int R>
__device__ __forceinline__ void mma_group(float (&c)[R][4], const uint4 (&a0)[U], const uint4 (&a1)[U], const uint4 (&b)[U][R]) {
#pragma unroll
  for (int u = 0; u < U; u++) {
#pragma unroll
    for (int n = 0; n < R; n++) {
      mma16816(c[n], a0[u].x, a1[u].x, a0[u].y, a1[u].y, b[u][n].x, b[u][n].y);
      mma16816(c[n], a0[u].z, a1[u].z, a0[u].w, a1[u].w, b[u][n].z, b[u][n].w);
    }
  }
}
// Weights are read once: keep them out of L1, which holds x for the other warps.
// (Marking their L2 lines evict_first as well was measured a tie: 866 / 11,599 against 865 / 11,579
// tokens/s, bench/RESULTS-cuda.md.)
__device__ __forceinline__ uint4 stream16(const bf16* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// SKINNY_THREADS (512): 16 warps a block, at most 128 registers a thread (ROW_TILES 1 fits).
#ifndef SKINNY_THREADS
#define SKINNY_THREADS 256
#endif

// MPT_SMEM_W: the block's whole weight slice (16 rows × K) is copied into shared memory BEFORE
// griddepcontrol.wait, by one thread with the Hopper bulk copy (one cp.async.bulk a row, completing on
// an mbarrier that expects 16·K·2 bytes), i.e. while the kernel before this one (decode attention, for
// the out-projection) still runs: the memory bus keeps streaming weights across the kernel boundary.
// After the wait only x (registers, one round trip for all of it), the mmas from shared memory and the
// epilogue remain. Needs no registers for the weights, so its blocks fit on an SM beside the attention
// and GEMM blocks still running; only for grids of at most one block an SM (all slices in flight at
// once) and K small enough for 16 rows in shared memory (the decoder's 2048-wide GEMMs).
// SMEM_STEPS: ceil(K / (32 · warps)), the 32-k steps a warp takes (k interleaved over the warps).
// Measured on the H100 (bench/RESULTS-cuda.md): it pays only when the kernels around it run at the same
// L1/shared carveout (index.ts layerCarveout; otherwise their blocks cannot share an SM and each SM
// drains at both boundaries: 677 against 843 tokens/s at batch 1), and then only at 9–16 rows (batch 16
// 11,299 against 11,202 through registers; batch 1 837 against 842).
// L2 prefetch of the NEXT GEMM's weights (not this GEMM's own: prefetching a GEMM's own slice right
// before it reads it was measured slower, bench/RESULTS-cuda.md): the byte range [pfBegin, pfEnd), or
// none when pfBegin is 0 (the MPT_LN_X variant never prefetches). Thread 0 of every block issues its
// 1/gridDim share of the range as bulk L2 prefetches (cp.async.bulk.prefetch.L2: the TMA unit fetches
// into L2, nothing comes back to the SM, no registers held) BEFORE griddepcontrol.wait, i.e. while the kernel before this GEMM still
// runs. For the decode step's out-projection, whose blocks wait through the latency-bound decode
// attention with their own weights already in flight: the bus would idle there, and the up GEMM after
// it reads the prefetched head of its weights from L2. Measured on the H100 (bench/RESULTS-cuda.md):
// 8 MB of the up weights 868 against 842 tokens/s at batch 1, 11,623 against 11,485 at batch 16; 16 and
// 24 MB less or worse, evict_last lines and the down GEMM prefetching the next QKV weights worse.
__device__ __forceinline__ void l2_prefetch_share(const void* pfBegin, const void* pfEnd) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const unsigned long long begin = (unsigned long long)pfBegin, end = (unsigned long long)pfEnd;
  if (begin == 0 || end <= begin) return;
  // Shares of whole 128-byte lines; the range's ends are 16-byte aligned (the host checks).
  const unsigned long long lines = (end - begin + 127) / 128, per = (lines + gridDim.x - 1) / gridDim.x;
  const unsigned long long from = begin + blockIdx.x * per * 128;
  const unsigned long long to = min(end, from + per * 128);
  for (unsigned long long a = from; a < to; a += 32768) {
    const unsigned bytes = (unsigned)min(32768ull, to - a);
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" :: "l"(a), "r"(bytes) : "memory");
  }
#endif
}

#if defined(MPT_SMEM_W) && defined(MPT_LN_X)
#error "MPT_SMEM_W and MPT_LN_X are separate variants"
#endif
#ifdef MPT_SMEM_W
__device__ __forceinline__ unsigned smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
// Shared row stride (elements): consecutive rows 64 bytes apart modulo 128, so the 16-byte reads of
// rows g and g+1 by a quarter warp hit distinct banks.
__device__ __forceinline__ int smem_w_stride(int K) { return K % 64 == 0 ? K + 32 : K; }
#endif
extern "C" __global__ void __launch_bounds__(SKINNY_THREADS) skinny_gemm(const XIN* __restrict__ x, const bf16* __restrict__ w, const bf16* __restrict__ bias,
                                       YT* __restrict__ y, int R, int K, int O, int accumulate, int gelu,
                                       const bf16* __restrict__ lnw, const bf16* __restrict__ lnb, float eps,  // MPT_LN_X only
                                       const float2* __restrict__ statsIn, float2* __restrict__ statsOut, float clip,
                                       const void* pfBegin, const void* pfEnd) {  // the L2 prefetch (l2_prefetch_share)
  extern __shared__ __align__(16) float red[];  // [warps][16][8·ROW_TILES], then (MPT_SMEM_W) the weights or (MPT_LN_X) x
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int nw = blockDim.x >> 5, cols = 8 * ROW_TILES;
  const int o0 = blockIdx.x * 16;
  const int kPer = K / nw, kBeg = warp * kPer, kEnd = kBeg + kPer;
  const bf16* wa = w + (long long)min(o0 + g, O - 1) * K + 8 * t;      // rows past O are read (clamped) and dropped
  const bf16* wb = w + (long long)min(o0 + g + 8, O - 1) * K + 8 * t;
  float c[ROW_TILES][4];
#pragma unroll
  for (int n = 0; n < ROW_TILES; n++) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.f;
  // y's old values (accumulate) and the bias, for the epilogue's first pass (thread i: output i % 16
  // of row i / 16), are loaded right after the wait, so their round trip overlaps the mmas instead of
  // adding one at the kernel's tail (measured on the H100: 843 against 838 tokens/s at batch 1, 11,211
  // against 11,122 at batch 16; bench/RESULTS-cuda.md).
  float yOld = 0.f, bOld = 0.f;
  auto loadEpilogue = [&]() {
    const int i = threadIdx.x, r = i / 16, o = o0 + i % 16;
    if (i < 16 * R && o < O) {
      if (accumulate) yOld = ld(y[(long long)r * O + o]);
      if (bias) bOld = __bfloat162float(bias[o]);
    }
  };

#ifdef MPT_SMEM_W
  const int wStride = smem_w_stride(K);
  bf16* ws = reinterpret_cast<bf16*>(red + nw * 16 * cols);
  __shared__ __align__(8) unsigned long long wReady;  // completes when all 16·K·2 bytes have landed
  const unsigned bar = smem_addr(&wReady);
  if (threadIdx.x == 0) {
    mbar_init(bar, 1);
    mbar_init_fence();  // the init, seen by the copies
    mbar_arrive_expect_tx(bar, 16 * K * 2);
    for (int r = 0; r < 16; r++) {  // rows past O are copied (clamped) and dropped
      const bf16* src = w + (long long)min(o0 + r, O - 1) * K;
      bulk_copy_to_shared(smem_addr(ws + r * wStride), src, K * 2, bar);
    }
    l2_prefetch_share(pfBegin, pfEnd);  // after this block's own weights: the next GEMM's (see above)
  }
  __syncthreads();  // the barrier is initialized before any thread polls it
  pdl_trigger();
  pdl_wait();  // x (and y, the bias) may come from the kernels before (DEPENDENT_LAUNCH)
  loadEpilogue();
  const bf16* xr[ROW_TILES];
  bool has[ROW_TILES];
#pragma unroll
  for (int n = 0; n < ROW_TILES; n++) { const int r = n * 8 + g; has[n] = r < R; xr[n] = x + (long long)(has[n] ? r : 0) * K + 8 * t; }
  // Step i of this warp covers k = 32·(warp + nw·i) … + 31: all of the warp's x in one round trip,
  // through coherent loads (ld.global.cg: x was written by the kernel before, which may have run
  // while this block started).
  (void)kEnd;
  uint4 B[SMEM_STEPS][ROW_TILES];
#pragma unroll
  for (int i = 0; i < SMEM_STEPS; i++) {
    const int k = 32 * (warp + nw * i);
#pragma unroll
    for (int n = 0; n < ROW_TILES; n++) B[i][n] = has[n] && k < K ? __ldcg(reinterpret_cast<const uint4*>(xr[n] + k)) : make_uint4(0, 0, 0, 0);
  }
  mbar_wait(bar, 0);
  // Two accumulators a row tile (the two mmas of a step), so the dependent chain is half as long.
  float c2[ROW_TILES][4];
#pragma unroll
  for (int n = 0; n < ROW_TILES; n++) c2[n][0] = c2[n][1] = c2[n][2] = c2[n][3] = 0.f;
  const bf16* wsa = ws + g * wStride + 8 * t;
  const bf16* wsb = ws + (g + 8) * wStride + 8 * t;
#pragma unroll
  for (int i = 0; i < SMEM_STEPS; i++) {
    const int k = 32 * (warp + nw * i);
    if (k < K) {
      const uint4 a0 = *reinterpret_cast<const uint4*>(wsa + k), a1 = *reinterpret_cast<const uint4*>(wsb + k);
#pragma unroll
      for (int n = 0; n < ROW_TILES; n++) {
        mma16816(c[n], a0.x, a1.x, a0.y, a1.y, B[i][n].x, B[i][n].y);
        mma16816(c2[n], a0.z, a1.z, a0.w, a1.w, B[i][n].z, B[i][n].w);
      }
    }
  }
#pragma unroll
  for (int n = 0; n < ROW_TILES; n++) {
#pragma unroll
    for (int e = 0; e < 4; e++) c[n][e] += c2[n][e];
  }
#else

  // UNROLL steps of 32 k per group; the next group's loads are issued before this group's mmas, so a
  // warp always has two groups of loads in flight.
  uint4 A0[UNROLL], A1[UNROLL], B[UNROLL][ROW_TILES];
  auto loadW = [&](int k, uint4 (&a0)[UNROLL], uint4 (&a1)[UNROLL]) {
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      a0[u] = stream16(wa + k + 32 * u);
      a1[u] = stream16(wb + k + 32 * u);
    }
  };
  loadW(kBeg, A0, A1);  // the weight stream starts before anything waits on x
#ifndef MPT_LN_X
  if (threadIdx.x == 0) l2_prefetch_share(pfBegin, pfEnd);  // the next GEMM's weights (see above)
#endif
  // (Prefetching the rest of the warp's weight slice into L2 here was measured slower: 619 against
  // 644 tokens/s at batch 1 with PDL. bench/RESULTS-cuda.md.)
  // (A second group of weight loads before the wait, SKINNY_PRE2, was measured slower: 734 against 810
  // tokens/s at batch 1 — 158 registers a thread halve the resident blocks. bench/RESULTS-cuda.md.)
  // (The head of the second group copied into shared memory before the wait instead, MPT_PRE_SMEM, 32 or
  // 16 KB a block for the down GEMM, was a tie: 867 / 865 against 866 tokens/s, H100, 2026-11-28.)
  // Weights are constant; x, y and the bias may come from the kernels before (DEPENDENT_LAUNCH). The
  // trigger comes before the wait, so the kernels after this one are scheduled while it runs (the next
  // GEMM's first weight loads overlap this one's tail: measured 5% faster a decode step than triggering
  // after the wait, which PDL_GEMM_LATE restores for comparison).
#ifdef PDL_GEMM_LATE
  pdl_wait();
  pdl_trigger();
#else
  pdl_trigger();
  pdl_wait();
#endif
  loadEpilogue();

#ifdef MPT_LN_X
  // Each warp normalizes only the K slice it multiplies, into its own xs [R][kPer + 32] bf16 (the
  // padding staggers the rows over the banks): no block barrier, no work done twice in a block. Per
  // row, the x slice, the LayerNorm weights and the row's K/16 statistics pairs (merged by the warp,
  // merge_row_stats in common.cuh) are loaded together: one L2 round trip before the first mma.
  // (The block-wide form — every block normalizing all of K behind two barriers — was measured slower
  // than a LayerNorm kernel of its own; bench/RESULTS-cuda.md.) LN_CHUNKS: ceil(kPer / 256).
  // (Having the L2 fetch the warp's next load group, or the rest of its slice, right after the wait,
  // so that the bus is not idle during this round trip, was measured slower in the step: 845 and 829
  // against 865 tokens/s at batch 1, H100; bench/RESULTS-cuda.md.)
  const int xStride = kPer + 32, xOff = kBeg;
  bf16* xs = reinterpret_cast<bf16*>(red + nw * 16 * cols) + (long long)warp * R * xStride;
  for (int r = 0; r < R; r++) {
    float v[LN_CHUNKS][8], wv[LN_CHUNKS][8], bv[LN_CHUNKS][8];
#pragma unroll
    for (int q = 0; q < LN_CHUNKS; q++) {
      const int kk = 8 * lane + 256 * q;
      if (kk < kPer) {
        load8(x + (long long)r * K + kBeg + kk, v[q]);
        load8(lnw + kBeg + kk, wv[q]);
        if (lnb) load8(lnb + kBeg + kk, bv[q]);
      }
    }
    float m, rs;
    merge_row_stats(statsIn + (long long)r * (K / 16), K / 16, K, eps, m, rs);
#pragma unroll
    for (int q = 0; q < LN_CHUNKS; q++) {
      const int kk = 8 * lane + 256 * q;
      if (kk < kPer) {
#pragma unroll
        for (int e = 0; e < 8; e++) v[q][e] = (v[q][e] - m) * rs * wv[q][e] + (lnb ? bv[q][e] : 0.f);
        store8(xs + (long long)r * xStride + kk, v[q]);
      }
    }
  }
  __syncwarp();
  const bf16* xBase = xs;
#else
  const bf16* xBase = x;
  const int xStride = K, xOff = 0;
#endif
  const bf16* xr[ROW_TILES];
  bool has[ROW_TILES];
#pragma unroll
  for (int n = 0; n < ROW_TILES; n++) { const int r = n * 8 + g; has[n] = r < R; xr[n] = xBase + (long long)(has[n] ? r : 0) * xStride + 8 * t; }
  auto loadX = [&](int k, uint4 (&b)[UNROLL][ROW_TILES]) {
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
#pragma unroll
      for (int n = 0; n < ROW_TILES; n++) b[u][n] = has[n] ? *reinterpret_cast<const uint4*>(xr[n] + (k - xOff) + 32 * u) : make_uint4(0, 0, 0, 0);
    }
  };
  auto load = [&](int k, uint4 (&a0)[UNROLL], uint4 (&a1)[UNROLL], uint4 (&b)[UNROLL][ROW_TILES]) { loadW(k, a0, a1); loadX(k, b); };
  // x is loaded a group ahead, like the weights. (Loading it a group at a time right before the group's
  // mmas, X_LATE, frees 8 registers a k-step at two row tiles — 128 a thread at unroll 4 instead of 162
  // — but puts x's L2 round trip on every group's path: batch 16 lost 10,721 against 11,609 tokens/s at
  // the same shapes; with what the registers then allow, the up GEMM at unroll 4 and the MLP-down GEMM
  // at 16 warps, 11,434; at batch 1 a tie, 882 / 882. H100, 2026-11-28. Deleted. The down GEMM at 16
  // warps recovered most of it: its weights in flight, not x's latency, are what a faster two-row-tile
  // down GEMM needs.)
  loadX(kBeg, B);
  for (int k = kBeg; k < kEnd; k += 32 * UNROLL) {
    uint4 N0[UNROLL], N1[UNROLL], NB[UNROLL][ROW_TILES];
    const bool more = k + 32 * UNROLL < kEnd;
    if (more) load(k + 32 * UNROLL, N0, N1, NB);
    mma_group(c, A0, A1, B);
    if (more) {
#pragma unroll
      for (int u = 0; u < UNROLL; u++) {
        A0[u] = N0[u]; A1[u] = N1[u];
#pragma unroll
        for (int n = 0; n < ROW_TILES; n++) B[u][n] = NB[u][n];
      }
    }
  }
#endif  // MPT_SMEM_W
  float* mine = red + warp * 16 * cols;
#pragma unroll
  for (int n = 0; n < ROW_TILES; n++) {
    mine[g * cols + n * 8 + 2 * t] = c[n][0];
    mine[g * cols + n * 8 + 2 * t + 1] = c[n][1];
    mine[(g + 8) * cols + n * 8 + 2 * t] = c[n][2];
    mine[(g + 8) * cols + n * 8 + 2 * t + 1] = c[n][3];
  }
  __syncthreads();
  // Half-warp h of the loop holds row r's 16 outputs (blockDim is a multiple of 32, 16·R of 16), so
  // the statistics are half-warp shuffles; the loop bound is warp-uniform for them.
  const int tilesO = O / 16;
  for (int base = 0; base < 16 * R; base += blockDim.x) {
    const int i = base + threadIdx.x, ol = i % 16, r = i / 16, o = o0 + ol;
    const bool valid = i < 16 * R && o < O;
    float v = 0.f;
    if (valid) {
      float s = 0.f;
      for (int q = 0; q < nw; q++) s += red[q * 16 * cols + ol * cols + r];
      YT* dst = y + (long long)r * O + o;
      const bool early = base == 0;  // the bias and y's old value were loaded after the wait
      if (bias) s += early ? bOld : __bfloat162float(bias[o]);
      if (gelu) s = gelu_value(s);
      if (accumulate) s += early ? yOld : ld(*dst);
      v = ld(st<YT>(s));
      if (clip > 0.f) v = fminf(fmaxf(v, -clip), clip);
      *dst = st<YT>(v);
    }
    if (statsOut) {  // uniform over the block
      float sum = v;
#pragma unroll
      for (int m = 8; m > 0; m >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, m);
      const float mu = sum * (1.f / 16.f), dv = valid ? v - mu : 0.f;
      float m2 = dv * dv;
#pragma unroll
      for (int m = 8; m > 0; m >>= 1) m2 += __shfl_xor_sync(0xffffffffu, m2, m);
      if (valid && ol == 0) statsOut[(long long)r * tilesO + blockIdx.x] = make_float2(mu, m2);
    }
  }
}
