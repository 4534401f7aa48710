// Causal attention forward on Hopper's warpgroup MMA (wgmma, sm_90a only): the same kernel name,
// arguments and results as flash_forward in flash_attention.cu (prefill with a key mask, a cache
// capacity and row strides; training with the log-sum-exp), which stays the fallback on other chips and
// head sizes. flash.ts picks one or the other per use, by what was measured faster.
//
// Shape: a block owns BQ = 64·FWD_WG query rows, one warpgroup (4 warps, 128 threads) for each 64 rows.
// Q is loaded once into shared memory; K and V tiles of BK = FWD_BK keys go through a three-stage ring
// (cp.async by every thread, one tile ahead). Every tile is stored in the 128-byte-swizzled layout wgmma
// reads straight from shared memory (below). Per tile and warpgroup:
//   S = Q·Kᵀ        wgmma m64nBKk16, both operands from shared memory (K is the K-major B operand),
//   softmax         online, in registers, log2 units (scale and ALiBi slope folded into one FFMA and exp2),
//                   the causal mask only where a tile crosses the diagonal (or the key end, or a key mask),
//   O += P·V        wgmma m64nDk16 with P from registers (the S accumulator packed to bf16 is a valid A
//                   fragment) and V the MN-major B operand (transposed by the instruction).
// P·V is left running while the next tile's barrier, loads and S product are issued; the other
// warpgroup's products fill the tensor cores during this one's softmax.
//
// Ring safety: tile it+1 is loaded (after the barrier of iteration it) into the stage of tile it−2, whose
// last reader, P·V of it−2, every warpgroup waited for (wgmma.wait_group 0 after S of it−1) before
// reaching that barrier.
//
// Key tiles go from the diagonal back to 0, as in flash_attention.cu: a row's largest scores come first,
// so the rescale of O is mostly skipped. The ALiBi term is taken relative to the warp's first row
// (constant along a row, it cancels in the softmax; only the lse puts it back).
#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef FWD_WG
#define FWD_WG 2
#endif
#ifndef FWD_BK
#define FWD_BK 64
#endif
#ifndef FWD_MIN_BLOCKS
#define FWD_MIN_BLOCKS 1
#endif
#if HEAD_DIM != 64 && HEAD_DIM != 128
#error "flash_forward_wgmma: HEAD_DIM must be 64 or 128 (whole 128-byte swizzle atoms, N of one wgmma)"
#endif
#if FWD_BK != 64 && FWD_BK != 128
#error "flash_forward_wgmma: FWD_BK must be 64 or 128"
#endif
#define WGS FWD_WG
#define BQ (64 * WGS)
#define BK FWD_BK
#define STAGES 3
#define THREADS (WGS * 128)
#define Q_BYTES (BQ * HEAD_DIM * 2)
#define TILE_BYTES (BK * HEAD_DIM * 2)
typedef __nv_bfloat16 bf16;

// wgmma.cuh: descriptors, fences, the products; its header says how the 128-byte swizzle lays out a tile.
#include "wgmma.cuh"
#include "flash_common.cuh"


// ROWS × HEAD_DIM bf16 from global rows src + r·rowStride into the 128-byte-swizzled layout at dst (a
// shared address); rows ≥ valid are zero-filled (never garbage: 0·NaN would poison P·V). No commit.
template <int ROWS> __device__ __forceinline__ void load_rows_sw128(unsigned dst, const bf16* src, long long rowStride, int valid) {
  constexpr int CHUNKS = HEAD_DIM / 8;  // 16-byte pieces a row
#pragma unroll
  for (int idx = threadIdx.x; idx < ROWS * CHUNKS; idx += THREADS) {
    const int r = idx / CHUNKS, c = idx % CHUNKS, half = c >> 3, cc = c & 7;
    const bool ok = r < valid;
    cp_async16(dst + half * ROWS * 128 + r * 128 + ((cc ^ (r & 7)) << 4), src + (long long)(ok ? r : 0) * rowStride + c * 8, ok);
  }
}

// Grid (batch·heads, ceil(tq / BQ)), THREADS threads, dynamic shared memory Q_BYTES + STAGES·2·TILE_BYTES
// + 1024 (for the alignment of the base). Query i sits at position kvLen − tq + i; keys are rows
// [0, kvLen) of a [batch, capacity] cache. mask, slopes and lse may be null.
extern "C" __global__ void __launch_bounds__(THREADS, FWD_MIN_BLOCKS) flash_forward(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const int* __restrict__ mask,
    const float* __restrict__ slopes, bf16* __restrict__ out, float* __restrict__ lse,
    int tq, int capacity, int kvLen, int qStride, int kvStride, int oStride, int nHeads, float scale) {
  extern __shared__ __align__(1024) unsigned char smemRaw[];
  const unsigned sQ = ((unsigned)__cvta_generic_to_shared(smemRaw) + 1023u) & ~1023u;
  const unsigned sKV = sQ + Q_BYTES;  // stage s: K at sKV + 2s·TILE_BYTES, V one TILE_BYTES further

  const int qTile = gridDim.y - 1 - blockIdx.y, bh = blockIdx.x;  // longest query tiles first
  const int h = bh % nHeads, b = bh / nHeads;
  const int wg = threadIdx.x >> 7, warpInWg = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int q0 = qTile * BQ, wgRow = q0 + 64 * wg, warpRow = wgRow + 16 * warpInWg;
  const int offset = kvLen - tq;  // position of query 0
  const float LOG2E = 1.4426950408889634f;
  const float slope2 = slopes ? slopes[h] * LOG2E : 0.f, scale2 = scale * LOG2E;
  const long long kvBase = (long long)b * capacity;
  const bf16* kHead = k + kvBase * kvStride + h * HEAD_DIM;
  const bf16* vHead = v + kvBase * kvStride + h * HEAD_DIM;

  const int kEnd = min(offset + min(q0 + BQ, tq), kvLen);  // keys past the block's last position are hidden
  const int nTiles = (kEnd + BK - 1) / BK, kFirst = (nTiles - 1) * BK;
  const bool wgLive = wgRow < tq;
  const int wgLast = offset + min(wgRow + 64, tq) - 1;  // this warpgroup's last position
  const int warpFirst = offset + warpRow;               // this warp's first position (the ALiBi reference)

  auto loadKV = [&](int stage, int k0) {
    const unsigned sK = sKV + 2 * stage * TILE_BYTES;
    load_rows_sw128<BK>(sK, kHead + (long long)k0 * kvStride, kvStride, kvLen - k0);
    load_rows_sw128<BK>(sK + TILE_BYTES, vHead + (long long)k0 * kvStride, kvStride, kvLen - k0);
  };
  load_rows_sw128<BQ>(sQ, q + (long long)b * tq * qStride + (long long)q0 * qStride + h * HEAD_DIM, qStride, tq - q0);
  if (nTiles > 0) loadKV(0, kFirst);
  asm volatile("cp.async.commit_group;\n" ::: "memory");

  float o[HEAD_DIM / 2];
#pragma unroll
  for (int i = 0; i < HEAD_DIM / 2; i++) o[i] = 0.f;
  float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};  // rows g and g + 8: running max (log2), partial sums
  unsigned p[BK / 16][4];  // P of the tile whose P·V may still run (read by the wgmma until its wait)

  for (int it = 0; it < nTiles; it++) {
    const int k0 = kFirst - it * BK, stage = it % STAGES;
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
    fence_proxy_async();
    __syncthreads();  // tile it is in shared memory for everyone; every P·V of tile it − 2 has completed
    if (it + 1 < nTiles) loadKV((it + 1) % STAGES, k0 - BK);
    asm volatile("cp.async.commit_group;\n" ::: "memory");

    if (!(wgLive && k0 <= wgLast)) {  // warpgroup-uniform: nothing of this tile is visible to these rows
      wgmma_wait<0>();
      continue;
    }
    const unsigned sK = sKV + 2 * stage * TILE_BYTES, sV = sK + TILE_BYTES;
    float s[BK / 2];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < HEAD_DIM / 16; kk++) {
      const unsigned within = (kk & 3) * 32;  // byte of the k16 step within its 128-byte row
      wgmma_ss<BK>(s, wgmma_desc(sQ + (kk >> 2) * BQ * 128 + wg * 64 * 128 + within, 16, 1024),
                   wgmma_desc(sK + (kk >> 2) * BK * 128 + within, 16, 1024), kk > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();  // S, and the previous tile's P·V
    wgmma_fence_regs(s);
    wgmma_fence_regs(o);

    // Scale, bias, mask (log2 units): bias slope·(j − warpFirst), one value per key column.
    const bool needMask = mask || k0 + BK - 1 > warpFirst || k0 + BK > kvLen;
    float mx0 = -INFINITY, mx1 = -INFINITY;
    const float base = slope2 * (float)(k0 - warpFirst + 2 * t4);
    const int pos0 = warpFirst + g, pos1 = pos0 + 8;
#pragma unroll
    for (int n = 0; n < BK / 8; n++) {
      const float cb0 = fmaf(slope2, (float)(n * 8), base), cb1 = fmaf(slope2, (float)(n * 8 + 1), base);
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int j = k0 + n * 8 + 2 * t4 + (e & 1);
        float x = fmaf(s[4 * n + e], scale2, (e & 1) ? cb1 : cb0);
        if (needMask) {
          if (j > (e < 2 ? pos0 : pos1) || j >= kvLen) x = -INFINITY;
          else if (mask && mask[kvBase + j] == 0) x = -1e30f;
        }
        s[4 * n + e] = x;
        if (e < 2) mx0 = fmaxf(mx0, x); else mx1 = fmaxf(mx1, x);
      }
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1)); mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1)); mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float n0 = fmaxf(mrow[0], mx0), n1 = fmaxf(mrow[1], mx1);
    // A row with nothing visible yet keeps max −∞; subtract 0 then, so exp2 gives 0 and not NaN.
    const float u0 = n0 == -INFINITY ? 0.f : n0, u1 = n1 == -INFINITY ? 0.f : n1;
    const float a0 = fast_exp2(mrow[0] - u0), a1 = fast_exp2(mrow[1] - u1);
    const bool sameMax = n0 == mrow[0] && n1 == mrow[1];
    mrow[0] = n0; mrow[1] = n1;
    lrow[0] *= a0; lrow[1] *= a1;
#pragma unroll
    for (int i = 0; i < BK / 2; i++) {
      const float x = fast_exp2(s[i] - ((i & 2) ? u1 : u0));
      s[i] = x;
      lrow[(i >> 1) & 1] += x;
    }
    if (!__all_sync(0xffffffffu, sameMax)) {  // warp-uniform: some row's max moved, rescale O
#pragma unroll
      for (int i = 0; i < HEAD_DIM / 2; i++) o[i] *= (i & 2) ? a1 : a0;
    }
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) {
      p[kk][0] = pack2(s[8 * kk + 0], s[8 * kk + 1]);
      p[kk][1] = pack2(s[8 * kk + 2], s[8 * kk + 3]);
      p[kk][2] = pack2(s[8 * kk + 4], s[8 * kk + 5]);
      p[kk][3] = pack2(s[8 * kk + 6], s[8 * kk + 7]);
    }
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) wgmma_rs<HEAD_DIM, 1>(o, p[kk], wgmma_desc(sV + kk * 16 * 128, BK * 128, 1024), 1);
    wgmma_commit();
  }
  wgmma_wait<0>();
  wgmma_fence_regs(o);
  if (!wgLive) return;

  bf16* oBase = out + (long long)b * tq * oStride + h * HEAD_DIM;
  float l0 = lrow[0], l1 = lrow[1];
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1); l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1); l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
  const int r0 = warpRow + g, r1 = r0 + 8;
#pragma unroll
  for (int n = 0; n < HEAD_DIM / 8; n++) {
    const int c = n * 8 + 2 * t4;
    if (r0 < tq) *reinterpret_cast<__nv_bfloat162*>(oBase + (long long)r0 * oStride + c) = __floats2bfloat162_rn(o[4 * n] * inv0, o[4 * n + 1] * inv0);
    if (r1 < tq) *reinterpret_cast<__nv_bfloat162*>(oBase + (long long)r1 * oStride + c) = __floats2bfloat162_rn(o[4 * n + 2] * inv1, o[4 * n + 3] * inv1);
  }
  // lse in natural-log units: (max + log2 Σ) · ln 2, the ALiBi shift slope·(pos − warpFirst) put back.
  if (lse && t4 == 0) {
    const float LN2 = 0.6931471805599453f;
    float* lr = lse + ((long long)b * nHeads + h) * tq;
    if (r0 < tq) lr[r0] = l0 > 0.f ? (mrow[0] - slope2 * (float)g + log2f(l0)) * LN2 : -INFINITY;
    if (r1 < tq) lr[r1] = l1 > 0.f ? (mrow[1] - slope2 * (float)(g + 8) + log2f(l1)) * LN2 : -INFINITY;
  }
}
