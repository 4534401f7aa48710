// dk and dv of causal ALiBi attention on wgmma (sm_90a only; flash_backward.cu has the math, the mma.sync
// version that other chips and head sizes use, and the dq pass that reads the dsᵀ stored here):
//   p_ij = exp(scale·q_i·k_j − (i − j)·slope − lse_i),  D_i = dO_i·o_i (attention_row_dot)
//   dv_j = Σ_i p_ij dO_i,  ds_ij = p_ij (dO_i·v_j − D_i),  dk_j = scale Σ_i ds_ij q_i
// One block = one warpgroup (128 threads) owns 64 keys and walks the 64-query tiles at or after them
// (grid (batch·nHeads, ceil(t/64)), 2 blocks an SM). K and V of the block sit in shared memory once; the
// Q and dO tiles, with each query's lse and D, are double-buffered by cp.async. Each query tile:
//   Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ   (wgmma m64n64k16, A and B from shared memory, K-major), issued together;
//   Pᵀ = exp2(scaled Sᵀ + ALiBi − lse), causal mask, while dPᵀ is still running;  dSᵀ = Pᵀ∘(dPᵀ − D);
//   dV += Pᵀ·dO and dK += dSᵀ·Q (m64nHEAD_DIMk16, A = Pᵀ / dSᵀ from registers — the accumulator fragment
//   packed to bf16 — and B = the dO / Q tile read MN-major); dSᵀ stored for the dq pass meanwhile.
// Warp w of the warpgroup owns keys 16w..16w+15 in every accumulator (wgmma.cuh), exactly the keys the
// mma.sync kernel gives warp w, so dsᵀ leaves in the same fragment layout (flash_backward_ds.cuh).
// Deterministic: every dk, dv row is one thread's sum in query order; no atomics.
// flash_backward_dkdv_fa3 (below) runs the same per-tile products warp-specialized (a producer warpgroup and
// two consumers of 64 keys sharing its Q/dO ring): the sm_90a default for heads of 128 (flash.ts).
#include "wgmma.cuh"
#include "flash_common.cuh"
#include "flash_backward_ds.cuh"
#include "flash_producer.cuh"
#include "mbarrier.cuh"
#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#if HEAD_DIM != 64 && HEAD_DIM != 128
#error "flash_backward_dkdv_wgmma: HEAD_DIM must be 64 or 128"
#endif
#define WB_ROWS 64                            // keys a block, queries a tile
#define WB_BLOCK_BYTES (WB_ROWS * 128)        // one 128-byte-swizzled column block of 64 bf16 columns
#define WB_TILE_BYTES (WB_ROWS * HEAD_DIM * 2)  // a tile of 64 rows × HEAD_DIM
#define WB_KSTEPS (HEAD_DIM / 16)             // k-steps of Sᵀ and dPᵀ
#ifndef WB_HEAD_MAJOR
#define WB_HEAD_MAJOR 0                       // 1: dk/dv grid (key tiles, batch·nHeads) instead of (batch·nHeads, key tiles)
#endif
typedef __nv_bfloat16 bf16;


// Rows [r0, r0 + 64) × HEAD_DIM of a global [.., stride] matrix into a swizzled tile at shared address
// `tile` (rows ≥ t zero-filled), by the block's THREADS threads. Consecutive threads take consecutive
// 16-byte chunks of a row.
template <int THREADS = 128>
__device__ __forceinline__ void load_tile_sw128(unsigned tile, const bf16* src, int r0, int t, int stride) {
  for (int idx = threadIdx.x; idx < WB_ROWS * HEAD_DIM / 8; idx += THREADS) {
    const int r = idx / (HEAD_DIM / 8), c = idx - r * (HEAD_DIM / 8);
    const bool ok = r0 + r < t;
    cp_async16(tile + (c >> 3) * WB_BLOCK_BYTES + sw128(r, c & 7), src + (long long)(ok ? r0 + r : 0) * stride + c * 8, ok);
  }
}

// The end of a dk/dv warpgroup's key tile: wait for its last products, then dk (times the softmax scale)
// and dv as bf16 rows of (batch b, head h), at DKDV_DK_WIDTHS / DKDV_DV_WIDTHS times the input's row
// stride; j0 = this thread's first key row.
__device__ __forceinline__ void wb_store_dk_dv(bf16* dk, bf16* dv, float (&dkAcc)[HEAD_DIM / 2], float (&dvAcc)[HEAD_DIM / 2],
    int b, int h, int t, int stride, int j0, float scale) {
  wgmma_wait<0>();
  wgmma_fence_regs(dvAcc);
  wgmma_fence_regs(dkAcc);
  wgmma_store_rows_bf16(dk + (long long)b * t * (DKDV_DK_WIDTHS * stride) + h * HEAD_DIM, dkAcc, j0, t, DKDV_DK_WIDTHS * stride, scale);
  wgmma_store_rows_bf16(dv + (long long)b * t * (DKDV_DV_WIDTHS * stride) + h * HEAD_DIM, dvAcc, j0, t, DKDV_DV_WIDTHS * stride, 1.f);
}

// acc[64 × HEAD_DIM] (+)= A (registers, 64 × 64: four k16 fragments) · the 64-row tile read MN-major,
// four wgmmas (not committed); accumulate = false overwrites acc with the first k16 step (the first
// product: the accumulators are never zeroed by other instructions, which would make ptxas serialize the
// wgmmas they stay in flight across).
__device__ __forceinline__ void wgmma_rows_times_tile(float (&acc)[HEAD_DIM / 2], const unsigned (&a)[4][4], unsigned tile, bool accumulate) {
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    const wgmma_desc_t b = wgmma_desc(tile + kk * 16 * 128, WB_BLOCK_BYTES, 1024);
    wgmma_rs<HEAD_DIM, 1>(acc, a[kk], b, accumulate || kk > 0);
  }
}

// ---- one 64-query tile of the dk/dv schedule, shared by flash_backward_dkdv_wgmma and _fa3 (below) -----
// Sᵀ = K·Qᵀ into s and dPᵀ = V·dOᵀ into dp (rows = the warpgroup's 64 keys, columns = 64 queries; wgmma
// m64n64k16, both operands K-major from shared memory), two commit groups, not waited for.
__device__ __forceinline__ void wb_issue_scores(float (&s)[32], float (&dp)[32], unsigned sK, unsigned sV, unsigned sQ, unsigned sDO) {
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < WB_KSTEPS; ks++) {
    const unsigned off = (ks >> 2) * WB_BLOCK_BYTES + (ks & 3) * 32;
    wgmma_m64n64k16_ss(s, wgmma_desc(sK + off, 16, 1024), wgmma_desc(sQ + off, 16, 1024), ks);
  }
  wgmma_commit();
#pragma unroll
  for (int ks = 0; ks < WB_KSTEPS; ks++) {
    const unsigned off = (ks >> 2) * WB_BLOCK_BYTES + (ks & 3) * 32;
    wgmma_m64n64k16_ss(dp, wgmma_desc(sV + off, 16, 1024), wgmma_desc(sDO + off, 16, 1024), ks);
  }
  wgmma_commit();
}

// Pᵀ from Sᵀ in place (Ls = the tile's 64 lse values), and packed as A fragments of 16 queries. Element e
// of column tile n: key j0 or j1 (e >> 1), query q0 + 8n + 2t4 + (e & 1); k0 = the warpgroup's first key,
// kb0/kb1 its keys' ALiBi terms.
__device__ __forceinline__ void wb_probabilities(float (&s)[32], unsigned (&pa)[4][4], const float* Ls, int q0, int k0, int t, int j0, int j1,
                                                 float kb0, float kb1, float slope2, float scale2, int t4) {
  const float LOG2E = 1.4426950408889634f;
  const bool needMask = q0 == k0 || q0 + WB_ROWS > t;  // the diagonal tile, or rows past t
#pragma unroll
  for (int n = 0; n < 8; n++) {
    const int col0 = n * 8 + 2 * t4;
    // slope·(j − i) − lse_i (log2 units) = slope·(j − k0) − [lse_i + slope·(i − k0)]: the first term per
    // key (kb0, kb1), the bracket per query.
    const float2 lse2 = *reinterpret_cast<const float2*>(&Ls[col0]);
    const float lq0 = fmaf(lse2.x, LOG2E, slope2 * (float)(q0 + col0 - k0)), lq1 = fmaf(lse2.y, LOG2E, slope2 * (float)(q0 + col0 + 1 - k0));
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int i = q0 + col0 + (e & 1), j = e < 2 ? j0 : j1;
      float x = fast_exp2(fmaf(s[4 * n + e], scale2, e < 2 ? kb0 : kb1) - ((e & 1) ? lq1 : lq0));
      if (needMask && (j > i || i >= t)) x = 0.f;
      s[4 * n + e] = x;
    }
  }
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
#pragma unroll
    for (int r = 0; r < 4; r++) pa[kk][r] = pack2(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
  }
}

// dSᵀ = Pᵀ∘(dPᵀ − D) into dp (Dr = the tile's 64 D values), packed the same way.
__device__ __forceinline__ void wb_score_gradients(float (&dp)[32], const float (&s)[32], unsigned (&sa)[4][4], const float* Dr, int t4) {
#pragma unroll
  for (int n = 0; n < 8; n++) {
    const float2 dq2 = *reinterpret_cast<const float2*>(&Dr[n * 8 + 2 * t4]);
#pragma unroll
    for (int e = 0; e < 4; e++) dp[4 * n + e] = s[4 * n + e] * (dp[4 * n + e] - ((e & 1) ? dq2.y : dq2.x));
  }
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
#pragma unroll
    for (int r = 0; r < 4; r++) sa[kk][r] = pack2(dp[8 * kk + 2 * r], dp[8 * kk + 2 * r + 1]);
  }
}

// dsᵀ of (query tile qt, key tile kt) as bf16 in flash_backward_ds.cuh's fragment layout (warp = this
// warp within its warpgroup: its 16 keys); masked blocks are zeros.
__device__ __forceinline__ void wb_store_ds(bf16* dsOut, const unsigned (&sa)[4][4], int bh, int qt, int kt, int t, int warp, int lane) {
  if (!dsOut) return;
  bf16* tileDs = dsOut + dsTile(bh, qt, kt, t) + warp * 4 * DS_BLOCK + 2 * lane;
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
#pragma unroll
    for (int r = 0; r < 4; r++) *reinterpret_cast<unsigned*>(tileDs + kk * DS_BLOCK + r * 64) = sa[kk][r];
  }
}

// Shared: K tile, V tile, 2 stages × (Q tile, dO tile), 2 stages × (lse, D) of 64 queries; the
// tiles 1024-byte aligned (the launch adds 1 KB for that).
extern "C" __global__ void __launch_bounds__(128, 2) flash_backward_dkdv_wgmma(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const bf16* __restrict__ dOut,
    const float* __restrict__ lse, const float* __restrict__ D, const float* __restrict__ slopes,
    bf16* __restrict__ dk, bf16* __restrict__ dv, bf16* __restrict__ dsOut, int t, int nHeads, float scale) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  const unsigned raw = (unsigned)__cvta_generic_to_shared(smemRaw), aligned = (raw + 1023u) & ~1023u;
  const unsigned sK = aligned, sV = aligned + WB_TILE_BYTES;
  auto sQ = [&](int stage) { return aligned + (2 + 2 * stage) * WB_TILE_BYTES; };
  auto sDO = [&](int stage) { return aligned + (3 + 2 * stage) * WB_TILE_BYTES; };
  float (*rowTerms)[2][WB_ROWS] = reinterpret_cast<float (*)[2][WB_ROWS]>(smemRaw + (aligned - raw) + 6 * WB_TILE_BYTES);  // [stage][lse or D]

  // Key tile 0 walks every query tile: the longest start first (of the grid; of each head with WB_HEAD_MAJOR,
  // grid (key tiles, batch·nHeads): a head's blocks run together and share its Q and dO tiles in L2).
  const int kTile = WB_HEAD_MAJOR ? blockIdx.x : blockIdx.y;
  const int bh = WB_HEAD_MAJOR ? blockIdx.y : blockIdx.x;
  const int h = bh % nHeads, b = bh / nHeads, stride = nHeads * HEAD_DIM;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const float LOG2E = 1.4426950408889634f;
  const float slope2 = slopes ? slopes[h] * LOG2E : 0.f, scale2 = scale * LOG2E;
  const long long base = (long long)b * t * stride + h * HEAD_DIM;
  const float* lrow = lse + (long long)bh * t;
  const float* drow = D + (long long)bh * t;
  const int k0 = kTile * WB_ROWS, j0 = k0 + warp * 16 + g, j1 = j0 + 8;
  const float kb0 = slope2 * (float)(j0 - k0), kb1 = slope2 * (float)(j1 - k0);  // the per-key ALiBi terms

  // Q and dO rows [q0, q0 + 64) and their lse and D into `stage`, one cp.async group (rows past t read
  // as zeros: their probabilities are masked).
  auto loadStage = [&](int stage, int q0) {
    load_tile_sw128(sQ(stage), q + base, q0, t, stride);
    load_tile_sw128(sDO(stage), dOut + base, q0, t, stride);
    if (threadIdx.x < 2 * WB_ROWS) {
      const int r = threadIdx.x & (WB_ROWS - 1), which = threadIdx.x / WB_ROWS, row = q0 + r < t ? q0 + r : 0;
      const unsigned dst = (unsigned)__cvta_generic_to_shared(&rowTerms[stage][which][r]);
      asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" :: "r"(dst), "l"((which ? drow : lrow) + row), "r"(q0 + r < t ? 4 : 0) : "memory");
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  };
  load_tile_sw128(sK, k + base, k0, t, stride);
  load_tile_sw128(sV, v + base, k0, t, stride);
  loadStage(0, k0);

  float dvAcc[HEAD_DIM / 2], dkAcc[HEAD_DIM / 2];  // set by the first tile's products

  // Sᵀ and dPᵀ (rows = keys, columns = queries) of the tile in `stage`: two commit groups.
  float s[32], dp[32];
  auto issueScores = [&](int stage) { wb_issue_scores(s, dp, sK, sV, sQ(stage), sDO(stage)); };
  unsigned pa[4][4], sa[4][4];
  auto probabilities = [&](int stage, int q0) { wb_probabilities(s, pa, rowTerms[stage][0], q0, k0, t, j0, j1, kb0, kb1, slope2, scale2, t4); };
  auto scoreGradients = [&](int stage) { wb_score_gradients(dp, s, sa, rowTerms[stage][1], t4); };
  auto storeDs = [&](int q0) { wb_store_ds(dsOut, sa, bh, q0 / WB_ROWS, kTile, t, warp, lane); };

  // The tensor pipe gets dV, dK of one tile and Sᵀ, dPᵀ of the next back to back: a tile's scores are
  // issued before the previous tile's dV and dK are waited for, and the next tile is loaded into that
  // tile's stage once they are done; dV is issued before dPᵀ is waited for. (Only dV and dK, read by
  // nothing but wgmma, stay in flight across the loop's back edge: ptxas serializes every wgmma of the
  // kernel when other instructions read or write registers of a wgmma issued in an earlier iteration.)
  // Measured against the plain order (every product waited for within its tile) and against dV-early
  // alone: bench/RESULTS-attention.md.
  for (int q0 = k0, it = 0; q0 < t; q0 += WB_ROWS, it++) {
    const int stage = it & 1;
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");  // this tile
    fence_proxy_async();  // this thread's cp.async writes, visible to the wgmma reads after the barrier
    __syncthreads();
    issueScores(stage);
    wgmma_wait<2>();  // the previous tile's dV and dK done
    __syncthreads();  // ... in every warp: the other stage is free
    if (q0 + WB_ROWS < t) loadStage(stage ^ 1, q0 + WB_ROWS);
    wgmma_wait<1>();  // Sᵀ done; dPᵀ may run on
    wgmma_fence_regs(s);
    probabilities(stage, q0);
    wgmma_fence();
    wgmma_rows_times_tile(dvAcc, pa, sDO(stage), it > 0);
    wgmma_commit();
    wgmma_wait<1>();  // dPᵀ done; dV may run on
    wgmma_fence_regs(dp);
    scoreGradients(stage);
    wgmma_fence();
    wgmma_rows_times_tile(dkAcc, sa, sQ(stage), it > 0);
    wgmma_commit();
    storeDs(q0);
  }
  wb_store_dk_dv(dk, dv, dkAcc, dvAcc, b, h, t, stride, j0, scale);
}

// ---- dk/dv warp-specialized as FlashAttention-3 (flash_forward_fa3.cu's machinery) ------------------
// The kernel above reloads every Q and dO tile for each 64 keys, by all its threads, and holds its one
// warpgroup at a __syncthreads twice a tile. Here one block = 3 warpgroups for 128 keys (1 block an SM):
//   warpgroup 0, the producer (registers given up with setmaxnreg.dec): loads K and V of the block's 128
//     keys once, then each 64-query tile's Q, dO, lse and D into a ring of FB_STAGES stages by cp.async,
//     each thread's copies arriving on the stage's "full" mbarrier as they land; before refilling a stage
//     it waits on its "empty" one, which both consumers' threads arrive on (count 2 × 128).
//   warpgroups 1 and 2, the consumers (setmaxnreg.inc): consumer c owns keys k0 + 64c .. k0 + 64c + 63 and
//     runs the kernel above's per-tile products on every stage it shares with the other (each Q/dO tile
//     is loaded once for 128 keys, not 64), waiting only on the ring's barriers.
// Causal start: the block's query tiles start at its first key tile (2·kBlock); consumer 1's keys start
// one tile later, so it releases the first stage unread (no products: that pair is not causal) and
// starts at the second. Per tile, dV and dK, dsᵀ: the same products in the same order with the same
// instructions as flash_backward_dkdv_wgmma (wb_* above), so the same bits.
// Block order: grid (batch·nHeads, key blocks), taken FB_GROUP heads at a time, the longest key blocks
// of a group first (grouped_block; FB_GROUP = 1: head by head, as WB_HEAD_MAJOR).
// FB_PINGPONG = n (1 or 2; 0, the define's default: off; flash.ts's FA3_DKDV_DEFAULT launches 1): the consumers take turns issuing their products, n turns
// a tile, as flash_forward_fa3.cu's FA3_PINGPONG (named barriers 1 and 2: consumer c waits on 1 + c for
// the other's hand-over, issues, and arrives on the other's), so that one's exp/ALiBi/mask and dSᵀ work
// runs while the other's products hold the tensor cores, instead of both at once.
//   n = 1: one turn a tile, around Sᵀ, dPᵀ (dV still issued before dPᵀ is waited for, as without it);
//   n = 2: two turns a tile, Sᵀ, dPᵀ, then dV and dK together once dSᵀ is ready: the tensor cores see
//     c0 Sᵀ dPᵀ | c1 Sᵀ dPᵀ | c0 dV dK | c1 dV dK | c0 Sᵀ dPᵀ ..., 2 of the 4 products at a time, and each
//     consumer's Pᵀ and dSᵀ fall under the other's two.
// The products, their operands and their order are the same, so the same bits. Consumer 1 has one tile
// fewer (not the block's first) and runs a tile ahead: it starts at the second query tile while consumer
// 0 works on the first, as without turns, so the turns pair c0 on tile i with c1 on tile i + 1. Consumer
// 0's last tile has no partner: consumer 1 takes n idle turns after its walk (its only turns when t ends
// within the block's first 64 keys), so both take n turns for each of consumer 0's tiles; consumer 0
// takes one more wait at the end (consumer 1's last hand-over), and every phase of both barriers completes.
#ifndef FB_STAGES
#define FB_STAGES 3                          // flash.ts passes its shape's stages (2 to 4: 227 KB of shared memory)
#endif
#ifndef FB_GROUP
#define FB_GROUP 16
#endif
#define FB_THREADS 384
#define FB_STAGE_BYTES (2 * WB_TILE_BYTES)  // Q tile, dO tile (lse and D sit after all tiles)
#define FB_PRODUCER_REGS 24
#define FB_CONSUMER_REGS 240                 // 128·24 + 256·240 ≤ 65536
#ifndef FB_PINGPONG
#define FB_PINGPONG 0                        // turns a tile (above); flash.ts's shapes '-pp1' and '-pp'
#endif
// FB_TMA: K, V and the ring's Q and dO tiles by the TMA unit (as FA3_TMA in flash_forward_fa3.cu): the
// producer's thread 0 issues cp.async.bulk.tensor with tensor maps of q, k, v and dO (tensor-map.ts: 3-D,
// columns × t rows × batch, rows past t read as zeros, boxes of 64 columns × 64 rows with the 128-byte
// swizzle, the layout produce_tile64 writes by hand), after an arrive.expect_tx of their bytes; the
// stage's lse and D (64 floats each) stay on the producer's 128 threads' 4-byte cp.async, so a full
// barrier takes 128 + 1 arrivals. The kernel is then flash_backward_dkdv_fa3_tma, with the four maps
// (q, k, v, dO) as its last arguments. flash.ts's shapes '-tma'.
#ifndef FB_TMA
#define FB_TMA 0
#endif
#if FB_PINGPONG < 0 || FB_PINGPONG > 2
#error "flash_backward_dkdv_fa3: FB_PINGPONG must be 0, 1 or 2"
#endif

// Shared (dynamic): K and V tiles of both consumers (4 tiles), FB_STAGES × (Q tile, dO tile), 1024-byte
// aligned (the launch adds 1 KB), then FB_STAGES × (lse, D) of 64 queries. Grid (batch·nHeads,
// ceil(t / 128)), FB_THREADS threads.
#if FB_TMA
extern "C" __global__ void __launch_bounds__(FB_THREADS, 1) flash_backward_dkdv_fa3_tma(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const bf16* __restrict__ dOut,
    const float* __restrict__ lse, const float* __restrict__ D, const float* __restrict__ slopes,
    bf16* __restrict__ dk, bf16* __restrict__ dv, bf16* __restrict__ dsOut, int t, int nHeads, float scale,
    const __grid_constant__ TensorMap qMap, const __grid_constant__ TensorMap kMap, const __grid_constant__ TensorMap vMap,
    const __grid_constant__ TensorMap dOMap) {
#else
extern "C" __global__ void __launch_bounds__(FB_THREADS, 1) flash_backward_dkdv_fa3(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const bf16* __restrict__ dOut,
    const float* __restrict__ lse, const float* __restrict__ D, const float* __restrict__ slopes,
    bf16* __restrict__ dk, bf16* __restrict__ dv, bf16* __restrict__ dsOut, int t, int nHeads, float scale) {
#endif
  extern __shared__ __align__(16) unsigned char smemRaw[];
  // Barriers: K/V full, then per stage full, empty.
  __shared__ __align__(8) unsigned long long barriers[1 + 2 * FB_STAGES];
  const unsigned raw = (unsigned)__cvta_generic_to_shared(smemRaw), aligned = (raw + 1023u) & ~1023u;
  auto sK = [&](int c) { return aligned + 2 * c * WB_TILE_BYTES; };
  auto sV = [&](int c) { return aligned + (2 * c + 1) * WB_TILE_BYTES; };
  auto sQ = [&](int stage) { return aligned + 4 * WB_TILE_BYTES + stage * FB_STAGE_BYTES; };
  auto sDO = [&](int stage) { return sQ(stage) + WB_TILE_BYTES; };
  float (*rowTerms)[2][WB_ROWS] = reinterpret_cast<float (*)[2][WB_ROWS]>(smemRaw + (aligned - raw) + (4 + 2 * FB_STAGES) * WB_TILE_BYTES);
  const unsigned bar0 = (unsigned)__cvta_generic_to_shared(barriers);
  const unsigned kvFull = bar0;
  auto full = [&](int stage) { return bar0 + 8u * (1 + 2 * stage); };
  auto empty = [&](int stage) { return bar0 + 8u * (2 + 2 * stage); };

  int kBlock, bh;
  grouped_block(FB_GROUP, kBlock, bh);  // flash_common.cuh: position 0 = key block 0, the longest walk
  const int h = bh % nHeads, b = bh / nHeads, stride = nHeads * HEAD_DIM;
#if !FB_TMA  // (with TMA the maps locate the head: the producer's cp.async alone needs its base)
  const long long base = (long long)b * t * stride + h * HEAD_DIM;
#endif
  const int tiles = (t + WB_ROWS - 1) / WB_ROWS, qt0 = 2 * kBlock;  // the block's first query tile
  const int nTiles = tiles - qt0;  // query tiles the producer loads

  if (threadIdx.x == 0) {
    // TMA: K/V full takes thread 0's expect_tx alone; a stage's full also the 128 threads' lse/D copies.
    mbar_init(kvFull, FB_TMA ? 1 : 128);
#pragma unroll
    for (int st = 0; st < FB_STAGES; st++) { mbar_init(full(st), 128 + FB_TMA); mbar_init(empty(st), 2 * 128); }
    mbar_init_fence();
  }
  __syncthreads();  // the barriers exist before anyone arrives or polls; no block-wide barrier after this
  const int wg = threadIdx.x >> 7;

  if (wg == 0) {  // the producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" :: "n"(FB_PRODUCER_REGS));
    const int tid = threadIdx.x;
    const float* lrow = lse + (long long)bh * t;
    const float* drow = D + (long long)bh * t;
#if FB_TMA
    if (tid == 0) {
      tensor_map_prefetch(&qMap); tensor_map_prefetch(&kMap); tensor_map_prefetch(&vMap); tensor_map_prefetch(&dOMap);
      mbar_arrive_expect_tx(kvFull, 4 * WB_TILE_BYTES);
#pragma unroll
      for (int c = 0; c < 2; c++) {
        tensor_load_rows<WB_ROWS, HEAD_DIM>(sK(c), &kMap, h * HEAD_DIM, (qt0 + c) * WB_ROWS, b, kvFull);
        tensor_load_rows<WB_ROWS, HEAD_DIM>(sV(c), &vMap, h * HEAD_DIM, (qt0 + c) * WB_ROWS, b, kvFull);
      }
    }
#else
#pragma unroll
    for (int c = 0; c < 2; c++) {
      produce_tile64<HEAD_DIM>(sK(c), k + base, (qt0 + c) * WB_ROWS, t, stride, tid);
      produce_tile64<HEAD_DIM>(sV(c), v + base, (qt0 + c) * WB_ROWS, t, stride, tid);
    }
    mbar_arrive_cp_async(kvFull);
#endif
    for (int it = 0; it < nTiles; it++) {
      const int stage = it % FB_STAGES, q0 = (qt0 + it) * WB_ROWS;
      mbar_wait(empty(stage), ((it / FB_STAGES) & 1) ^ 1);  // both consumers done with its previous round
#if FB_TMA
      if (tid == 0) {
        mbar_arrive_expect_tx(full(stage), 2 * WB_TILE_BYTES);
        tensor_load_rows<WB_ROWS, HEAD_DIM>(sQ(stage), &qMap, h * HEAD_DIM, q0, b, full(stage));
        tensor_load_rows<WB_ROWS, HEAD_DIM>(sDO(stage), &dOMap, h * HEAD_DIM, q0, b, full(stage));
      }
#else
      produce_tile64<HEAD_DIM>(sQ(stage), q + base, q0, t, stride, tid);
      produce_tile64<HEAD_DIM>(sDO(stage), dOut + base, q0, t, stride, tid);
#endif
      // lse and D of the tile's 64 queries: threads 0..63 lse, 64..127 D (rows past t read as zeros)
      const int r = tid & (WB_ROWS - 1), which = tid / WB_ROWS, row = q0 + r < t ? q0 + r : 0;
      const unsigned dst = (unsigned)__cvta_generic_to_shared(&rowTerms[stage][which][r]);
      asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" :: "r"(dst), "l"((which ? drow : lrow) + row), "r"(q0 + r < t ? 4 : 0) : "memory");
      mbar_arrive_cp_async(full(stage));
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    return;
  }

  // The consumers.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" :: "n"(FB_CONSUMER_REGS));
  const int c = wg - 1, kTile = qt0 + c;  // this consumer's key tile
  const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
#if FB_PINGPONG
  const int myTurn = 1 + c, otherTurn = 2 - c;
  if (c == 1) turn_pass(otherTurn);  // consumer 0 takes the first turn
#define FB_TURN_WAIT() turn_wait(myTurn)
#define FB_TURN_PASS() turn_pass(otherTurn)
#else
#define FB_TURN_WAIT()
#define FB_TURN_PASS()
#endif
  // A tile's turns without products (consumer 1's, as the partner of consumer 0's last tile).
  auto idleTurns = [&]() {
#pragma unroll
    for (int n = 0; n < FB_PINGPONG; n++) { FB_TURN_WAIT(); FB_TURN_PASS(); }
  };
  if (c == 1) mbar_arrive(empty(0));  // the first stage holds query tile qt0, all before these keys
  if (kTile >= tiles) {               // t ends within the first 64 keys: nothing more to do
    idleTurns();
    return;
  }
  const float LOG2E = 1.4426950408889634f;
  const float slope2 = slopes ? slopes[h] * LOG2E : 0.f, scale2 = scale * LOG2E;
  const int k0 = kTile * WB_ROWS, j0 = k0 + warp * 16 + g, j1 = j0 + 8;
  const float kb0 = slope2 * (float)(j0 - k0), kb1 = slope2 * (float)(j1 - k0);  // the per-key ALiBi terms
  const unsigned myK = sK(c), myV = sV(c);

  float dvAcc[HEAD_DIM / 2], dkAcc[HEAD_DIM / 2];  // set by the first tile's products
  float s[32], dp[32];
  unsigned pa[4][4], sa[4][4];
  mbar_wait(kvFull, 0);

  // Per tile (without ping-pong, and with one turn around Sᵀ, dPᵀ): Sᵀ and dPᵀ issued together, dV issued
  // before dPᵀ is waited for, then dK; the tile's own products waited for at its end, and its stage
  // released (two turns: FB_PINGPONG above). (The wgmma kernel above also issues the next
  // tile's Sᵀ, dPᵀ before this tile's dV, dK are done; here that keeps Pᵀ and dSᵀ of one tile live with
  // Sᵀ and dPᵀ of the next, more than the consumers' 240 registers, and ptxas serializes every wgmma
  // (C7512); waiting for dV alone before the next tile serializes too. The other consumer's products
  // fill the tensor cores meanwhile. With dSᵀ through shared memory — dK reading it as a shared operand —
  // the overlapped schedule compiles without C7512 but ran slower, 0.728 against 0.685 ms: it holds two
  // stages a consumer, and 4 stages do not fit beside two dSᵀ tiles a consumer; RESULTS-attention.md, bwd3b.)
  // it: the block's query tile index from qt0; n: the tiles this consumer has done.
  for (int it = c, n = 0; it < nTiles; it++, n++) {
    const int stage = it % FB_STAGES, q0 = (qt0 + it) * WB_ROWS;
    mbar_wait(full(stage), (it / FB_STAGES) & 1);
#if !FB_TMA  // (TMA writes through the async proxy, as wgmma reads; lse and D are read by plain loads)
    fence_proxy_async();  // the copies, seen by the tensor cores' reads
#endif
    FB_TURN_WAIT();
    wb_issue_scores(s, dp, myK, myV, sQ(stage), sDO(stage));
    FB_TURN_PASS();
    wgmma_wait<1>();  // Sᵀ done; dPᵀ may run on
    wgmma_fence_regs(s);
    wb_probabilities(s, pa, rowTerms[stage][0], q0, k0, t, j0, j1, kb0, kb1, slope2, scale2, t4);
#if FB_PINGPONG == 2
    wgmma_wait<0>();  // dPᵀ done
    wgmma_fence_regs(dp);
    wb_score_gradients(dp, s, sa, rowTerms[stage][1], t4);
    wgmma_fence();
    FB_TURN_WAIT();
    wgmma_rows_times_tile(dvAcc, pa, sDO(stage), n > 0);
    wgmma_rows_times_tile(dkAcc, sa, sQ(stage), n > 0);
    wgmma_commit();
    FB_TURN_PASS();
#else
    wgmma_fence();
    wgmma_rows_times_tile(dvAcc, pa, sDO(stage), n > 0);
    wgmma_commit();
    wgmma_wait<1>();  // dPᵀ done; dV may run on
    wgmma_fence_regs(dp);
    wb_score_gradients(dp, s, sa, rowTerms[stage][1], t4);
    wgmma_fence();
    wgmma_rows_times_tile(dkAcc, sa, sQ(stage), n > 0);
    wgmma_commit();
#endif
    wb_store_ds(dsOut, sa, bh, qt0 + it, kTile, t, warp, lane);
    wgmma_wait<0>();  // dV and dK of this tile: its stage is free, Pᵀ and dSᵀ's registers too
    mbar_arrive(empty(stage));
  }
  wb_store_dk_dv(dk, dv, dkAcc, dvAcc, b, h, t, stride, j0, scale);
#if FB_PINGPONG
  if (c == 1) idleTurns();      // the partner of consumer 0's last tile (after the stores: they need no turn)
  else turn_wait(myTurn);    // consumer 1's last hand-over
#endif
#undef FB_TURN_WAIT
#undef FB_TURN_PASS
}

// ---- dq from the stored dsᵀ on wgmma ----------------------------------------------------------------
// dq_i = scale Σ_j ds_ij k_j, the one product left once flash_backward_dkdv(_wgmma) has stored dsᵀ
// (flash_backward_dq_stored in flash_backward.cu is the mma.sync version and the fallback). The pass streams
// the 553 MB scratch (batch 8, 16 heads, t = 2048) and is bound by DRAM: the mma.sync pass moved ~1 GB
// from DRAM for it (ncu), because its blocks run all heads at once (grid (batch·nHeads, query blocks))
// and the dsᵀ stream evicts each K tile from L2 before the next wave of query blocks of its head reads it
// again. Here:
//   - a head-major grid (query blocks, batch·nHeads): a head's blocks run together and read each K tile
//     while it is in L2 (this alone took the pass from 0.37 to 0.27 ms; wgmma without it gained ~2 %);
//   - the dsᵀ tiles, read once, come with an L2 evict-first policy (within the noise; never slower);
//   - one block = 2 warpgroups, warpgroup w owns the 64-query tile qt0 + w, and the block walks the key
//     tiles 0..qt0 + 1: each K tile is read once for two dsᵀ tiles; a 3-stage ring of (K tile, 2 dsᵀ tiles)
//     by cp.async, one barrier a key tile, 2 blocks an SM (blocks of 1 or 4 warpgroups, 2 or 4 stages,
//     were slower: bench/RESULTS-attention.md);
//   - each warpgroup reads its dsᵀ tile's A fragments with ldmatrix.trans (the same reads and fragments as
//     the mma.sync pass: the stored layout is flash_backward_ds.cuh's) and issues dQ += dS·K as 4 ×
//     m64nHEAD_DIMk16, A from registers, B = the K tile read MN-major (as dV's dO above).
// A warpgroup whose query tile does not reach the key tile (the block's diagonal) gets a zero-filled dsᵀ
// tile and adds exact zeros, so every wgmma is issued by the whole block without a branch that ptxas
// cannot prove uniform. Sums in key order, 16 keys a step, as the mma.sync pass: the same bits (checked on
// the bench's inputs, 0 of 33.5 M elements differ). Deterministic, no atomics.
#define DQW_WG 2          // warpgroups a block = 64-query tiles a block
#define DQW_STAGES 3
#define DQW_THREADS (128 * DQW_WG)
#define DQW_STAGE_BYTES (WB_TILE_BYTES + DQW_WG * DS_TILE_BYTES)

// Shared: DQW_STAGES × (K tile of 64 keys × HEAD_DIM, 128-byte swizzled; DQW_WG dsᵀ tiles of 8 KB as
// stored), 1024-byte aligned (the launch adds 1 KB for that). Grid (ceil(tiles / DQW_WG), batch·nHeads),
// DQW_THREADS threads.
extern "C" __global__ void __launch_bounds__(DQW_THREADS, 2) flash_backward_dq_wgmma(
    const bf16* __restrict__ k, const bf16* __restrict__ ds, bf16* __restrict__ dq, int t, int nHeads, float scale) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  const unsigned aligned = ((unsigned)__cvta_generic_to_shared(smemRaw) + 1023u) & ~1023u;
  auto sK = [&](int stage) { return aligned + stage * DQW_STAGE_BYTES; };
  auto sDs = [&](int stage, int w) { return aligned + stage * DQW_STAGE_BYTES + WB_TILE_BYTES + w * DS_TILE_BYTES; };
  const int bh = blockIdx.y, stride = nHeads * HEAD_DIM;
  const int qBlock = blockIdx.x, qBlocks = gridDim.x;  // a query block of 2 tiles, of this head
  const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2;
  const long long base = (long long)(bh / nHeads) * t * stride + (bh % nHeads) * HEAD_DIM;
  const int tiles = (t + DS_TILE - 1) / DS_TILE;
  const int qt0 = (qBlocks - 1 - qBlock) * DQW_WG;  // each head's longest walks first
  const int qtLast = min(qt0 + DQW_WG, tiles) - 1;

  // Key tile kt and its dsᵀ tiles into stage kt % DQW_STAGES, one commit group (an empty one past the
  // last key tile keeps the count). Pairs that do not exist (kt after the query tile, or a query tile
  // past t) read as zeros, as do K rows past t.
  unsigned long long evictFirst;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(evictFirst));
  auto load = [&](int kt) {
    const int stage = kt % DQW_STAGES, k0 = kt * WB_ROWS;
    if (kt <= qtLast) {
      load_tile_sw128<DQW_THREADS>(sK(stage), k + base, k0, t, stride);
#pragma unroll
      for (int w = 0; w < DQW_WG; w++) {
        const int qt = qt0 + w;
        const bool live = qt <= qtLast && kt <= qt;
        const bf16* src = ds + (live ? dsTile(bh, qt, kt, t) : 0);
        for (int idx = threadIdx.x; idx < DS_TILE * DS_TILE / 8; idx += DQW_THREADS) cp_async16(sDs(stage, w) + idx * 16, src + idx * 8, live, evictFirst);
      }
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  };

  float acc[HEAD_DIM / 2];
#pragma unroll
  for (int i = 0; i < HEAD_DIM / 2; i++) acc[i] = 0.f;
  // The A fragment (16 queries × 16 keys) is the transpose of the stored one: its registers 0..3 are the
  // stored registers 0, 2, 1, 3, one 8 × 8 matrix each (flash_backward_dq_stored reads them the same way).
  const int mi = lane >> 3, stored = ((mi & 1) << 1) | (mi >> 1);
  const unsigned aOff = (unsigned)(warp * DS_BLOCK + stored * 64 + (lane & 7) * 8) * 2;
#pragma unroll
  for (int s = 0; s < DQW_STAGES - 1; s++) load(s);
  for (int kt = 0; kt <= qtLast; kt++) {
    const int stage = kt % DQW_STAGES;
    asm volatile("cp.async.wait_group %0;\n" :: "n"(DQW_STAGES - 2) : "memory");  // this thread's part of tile kt
    fence_proxy_async();  // visible to the wgmma (async proxy) reads of K after the barrier
    __syncthreads();      // every thread's part landed; every warpgroup is done with tile kt - 1's stage
    load(kt + DQW_STAGES - 1);
    unsigned a[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; kk++) ldsm_x4(sDs(stage, wg) + aOff + kk * 4 * DS_BLOCK * 2, a[kk][0], a[kk][1], a[kk][2], a[kk][3], true);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; kk++) wgmma_rs<HEAD_DIM, 1>(acc, a[kk], wgmma_desc(sK(stage) + kk * 16 * 128, WB_BLOCK_BYTES, 1024), 1);
    wgmma_commit();
    wgmma_wait<0>();
  }
  wgmma_fence_regs(acc);
  wgmma_store_rows_bf16(dq + base, acc, (qt0 + wg) * WB_ROWS + warp * 16 + g, t, stride, scale);  // this thread's queries
}
