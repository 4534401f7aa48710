// dq from the stored dsᵀ on wgmma, warp-specialized as FlashAttention-3 (sm_90a only):
//   dq_i = scale Σ_j ds_ij k_j
// the pass after flash_backward_dkdv(_wgmma/_fa3) has stored dsᵀ (flash_backward_ds.cuh's layout). The
// same products, in the same order, from the same A fragments, as flash_backward_dq_wgmma
// (flash_backward_wgmma.cu) and flash_backward_dq_stored (flash_backward.cu, mma.sync): the same bits.
//
// Why: the pass reads 553 MB of dsᵀ (batch 8, 16 heads, t = 2048) once and is bound by DRAM. In
// flash_backward_dq_wgmma every thread also loads (a cp.async ring, one __syncthreads and a
// wgmma_wait<0> each key tile), so the loads of a block stall behind its math and its slowest thread.
// Here the roles are split:
//   warpgroup 0, the producer (registers given up with setmaxnreg.dec): for each key tile kt, once the
//     stage is free (its "empty" mbarrier), thread 0 issues one 1-D bulk copy (cp.async.bulk, the TMA
//     unit) of 8 KB for each live dsᵀ tile of the block's query tiles (stored contiguously; L2
//     evict-first: read once) against the stage's "full" mbarrier (expect_tx), and the 128 threads copy
//     the K tile of 64 keys by cp.async into the 128-byte-swizzled layout wgmma reads (a bulk copy cannot
//     swizzle), each thread arriving on "full" when its copies land (noinc);
//   warpgroups 1..DQF_CONSUMERS, the consumers (setmaxnreg.inc), DQF_TILES 64-query tiles each: per key
//     tile they wait on "full", read each dsᵀ tile's A fragments with ldmatrix.trans (as the other
//     passes), issue dQ += dS·K as 4 × m64nHEAD_DIMk16 a query tile (A from registers, B = the K tile
//     read MN-major), wait for them and arrive on "empty". No block-wide barrier in the loop: the
//     producer runs DQF_STAGES − 1 key tiles ahead of the slowest consumer whatever the math does.
// One block an SM (ptxas compiles every path to the launch bound's register limit, 168 at 384 threads
// and 1 block; setmaxnreg only moves registers between warpgroups at run time. Blocks of 2 consumers and
// a producer warp at 2 blocks an SM get 96 registers, and ptxas serializes the wgmmas for lack of them).
// So each K tile is read once for DQF_CONSUMERS · DQF_TILES dsᵀ tiles (from L2, mostly: see the grid).
// A query tile that does not reach key tile kt (past the diagonal, or past t) gets A = 0 in registers
// (a select, no branch: every wgmma is issued by the whole warpgroup) and adds exact zeros, as the other
// passes' zero-filled tiles; its dsᵀ is not loaded.
//
// Grid (batch·nHeads, query blocks), in the order of grouped_block (flash_common.cuh): heads taken
// DQF_GROUP at a time, the longest query blocks (the last queries: they walk the most key tiles) first
// within a group. DQF_GROUP = 1 is the head-major order of flash_backward_dq_wgmma, whose L2 reuse of K
// took that pass from 0.37 to 0.27 ms (bench/RESULTS-attention.md). Deterministic: every dq row is one
// thread's sum in key order, 16 keys a step; no atomics.
//
// Measured (H100, bench/RESULTS-attention.md, session dq4): alone, the best shape (2 consumers of 2 tiles,
// 4 stages) ties flash_backward_dq_wgmma (0.272 against 0.270 ms), and so do the persistent and grouped
// grids: both read dsᵀ at ~2.0 TB/s, held by the memory system rather than by their schedules. flash.ts
// keeps the wgmma pass as the default; this one is selected by MPT_CUDA_DQ.
#include "wgmma.cuh"
#include "flash_common.cuh"
#include "flash_backward_ds.cuh"
#include "flash_producer.cuh"
#include "mbarrier.cuh"
#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#if HEAD_DIM != 64 && HEAD_DIM != 128
#error "flash_backward_dq_fa3: HEAD_DIM must be 64 or 128"
#endif
#ifndef DQF_CONSUMERS
#define DQF_CONSUMERS 2                 // consumer warpgroups a block
#endif
#ifndef DQF_TILES
#define DQF_TILES 1                     // 64-query tiles a consumer (accumulators of HEAD_DIM / 2 floats each)
#endif
#ifndef DQF_STAGES
#define DQF_STAGES 4
#endif
#ifndef DQF_GROUP
#define DQF_GROUP 1                     // heads a group of the grid's order (not persistent)
#endif
#ifndef DQF_PERSISTENT
#define DQF_PERSISTENT 0                // 1: one block an SM looping over work items (below)
#endif
#ifndef DQF_REVERSE
#define DQF_REVERSE 0                   // 1: the (batch, head) pairs from the last (below)
#endif
#define DQF_ROWS 64                                      // keys a tile, queries a tile
#define DQF_QTILES (DQF_CONSUMERS * DQF_TILES)          // query tiles a block (a work item)
#define DQF_THREADS (128 * (DQF_CONSUMERS + 1))         // the producer warpgroup, then the consumers
#define DQF_PRODUCER_REGS 24
#define DQF_CONSUMER_REGS_RAW ((65536 - 128 * DQF_PRODUCER_REGS) / (128 * DQF_CONSUMERS) / 8 * 8)
#define DQF_CONSUMER_REGS (DQF_CONSUMER_REGS_RAW > 240 ? 240 : DQF_CONSUMER_REGS_RAW)  // 240 for 2 consumers, 160 for 3
#define DQF_COL_BLOCK (DQF_ROWS * 128)                   // one swizzled column block of 64 bf16 columns
#define DQF_K_BYTES (DQF_ROWS * HEAD_DIM * 2)
#define DQF_STAGE_BYTES (DQF_K_BYTES + DQF_QTILES * DS_TILE_BYTES)
typedef __nv_bfloat16 bf16;

// Work item r of this block (a (batch, head) pair bh and a query block pos, 0 = the last, the longest
// walk); false past the last. Not persistent: the block's one item, in grouped_block's order (grid
// (pairs, qBlocks)). DQF_PERSISTENT: items i = bh·qBlocks + pos (each head's query blocks together,
// longest first: the head-major order, whose blocks share K in L2) dealt out statically, round r's
// gridDim.x items to the blocks in order on even rounds and in reverse on odd ones, so that a block
// that gets a long item in one round gets a short one in the next (the costs repeat every qBlocks items:
// a simulation of the 1.3B shape put the busiest block within ~3 % of the mean). The producer and the
// consumers walk the same sequence, so nothing is handed over but the ring's barriers, and the producer
// loads the next item's first tiles under the consumers' last ones and their dq stores.
// DQF_REVERSE: the pairs in reverse order, last first. In the backward the dk/dv kernel runs just before
// and takes its heads in order (flash_backward_dkdv_fa3: groups of heads, first to last), so the dsᵀ it
// wrote last, the last heads', may still be in L2 when this pass starts: read first, they need not come
// from DRAM.
__device__ __forceinline__ bool dqf_item(int r, int pairs, int qBlocks, int& bh, int& pos) {
#if DQF_PERSISTENT
  const int nb = gridDim.x, i = r * nb + ((r & 1) ? nb - 1 - (int)blockIdx.x : (int)blockIdx.x);
  if (i >= pairs * qBlocks) return false;
  bh = i / qBlocks;
  pos = i - bh * qBlocks;
#else
  if (r > 0) return false;
  grouped_block(DQF_GROUP, pos, bh);
#endif
  if (DQF_REVERSE) bh = pairs - 1 - bh;
  return true;
}

// Shared (dynamic): DQF_STAGES × (K tile, 128-byte swizzled; DQF_QTILES dsᵀ tiles of 8 KB as stored),
// 1024-byte aligned (the launch adds 1 KB). Grid (pairs, ceil(tiles / DQF_QTILES)), or with
// DQF_PERSISTENT at most one block an SM; DQF_THREADS threads. pairs = batch·nHeads.
extern "C" __global__ void __launch_bounds__(DQF_THREADS, 1) flash_backward_dq_fa3(
    const bf16* __restrict__ k, const bf16* __restrict__ ds, bf16* __restrict__ dq, int t, int nHeads, int pairs, float scale) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  __shared__ __align__(8) unsigned long long barriers[2 * DQF_STAGES];  // per stage: full, empty
  const unsigned aligned = ((unsigned)__cvta_generic_to_shared(smemRaw) + 1023u) & ~1023u;
  auto sK = [&](int stage) { return aligned + stage * DQF_STAGE_BYTES; };
  auto sDs = [&](int stage, int w) { return aligned + stage * DQF_STAGE_BYTES + DQF_K_BYTES + w * DS_TILE_BYTES; };
  const unsigned bar0 = (unsigned)__cvta_generic_to_shared(barriers);
  auto full = [&](int stage) { return bar0 + 16u * stage; };
  auto empty = [&](int stage) { return bar0 + 16u * stage + 8u; };
  const int stride = nHeads * HEAD_DIM, tiles = (t + DS_TILE - 1) / DS_TILE;
  const int qBlocks = (tiles + DQF_QTILES - 1) / DQF_QTILES;
  // An item's head offset in k and dq, its first query tile, and its last: key tiles 0..qtLast reach one
  // of its query tiles.
  auto place = [&](int bh, int pos, long long& base, int& qt0, int& qtLast) {
    base = (long long)(bh / nHeads) * t * stride + (bh % nHeads) * HEAD_DIM;
    qt0 = (qBlocks - 1 - pos) * DQF_QTILES;
    qtLast = min(qt0 + DQF_QTILES, tiles) - 1;
  };

  if (threadIdx.x == 0) {
#pragma unroll
    for (int st = 0; st < DQF_STAGES; st++) { mbar_init(full(st), 128 + 1); mbar_init(empty(st), 128 * DQF_CONSUMERS); }
    mbar_init_fence();
  }
  __syncthreads();  // the barriers exist before anyone arrives or polls; no block-wide barrier after this
  const int wg = threadIdx.x >> 7, lane = threadIdx.x & 31;
  int bh, pos;

  if (wg == 0) {  // the producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" :: "n"(DQF_PRODUCER_REGS));
    const int tid = threadIdx.x;
    unsigned long long evictFirst;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(evictFirst));
    int n = 0;  // key tiles loaded so far (over all items): the ring's position
    for (int r = 0; dqf_item(r, pairs, qBlocks, bh, pos); r++) {
      long long base;
      int qt0, qtLast;
      place(bh, pos, base, qt0, qtLast);
      for (int kt = 0; kt <= qtLast; kt++, n++) {
        const int stage = n % DQF_STAGES;
        mbar_wait(empty(stage), ((n / DQF_STAGES) & 1) ^ 1);  // every consumer done with its previous round
        if (tid == 0) {
          // The live pairs: query tiles qt0 + w with kt ≤ qt0 + w ≤ qtLast (at least qtLast's).
          const int first = max(kt - qt0, 0);
          mbar_arrive_expect_tx(full(stage), (qtLast - qt0 + 1 - first) * DS_TILE_BYTES);
          for (int w = first; w <= qtLast - qt0; w++) {
            bulk_copy_to_shared(sDs(stage, w), ds + dsTile(bh, qt0 + w, kt, t), DS_TILE_BYTES, full(stage), evictFirst);
          }
        }
        produce_tile64<HEAD_DIM>(sK(stage), k + base, kt * DQF_ROWS, t, stride, tid);
        mbar_arrive_cp_async(full(stage));
      }
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    return;
  }

  // The consumers: consumer c = wg − 1 owns the query tiles qt0 + c + DQF_CONSUMERS·i, i < DQF_TILES, of each item.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" :: "n"(DQF_CONSUMER_REGS));
  const int c = wg - 1, warp = (threadIdx.x >> 5) & 3, g = lane >> 2;
  // The A fragment (16 queries × 16 keys) is the transpose of the stored one: its registers 0..3 are the
  // stored registers 0, 2, 1, 3, one 8 × 8 matrix each (as flash_backward_dq_wgmma reads them).
  const int mi = lane >> 3, stored = ((mi & 1) << 1) | (mi >> 1);
  const unsigned aOff = (unsigned)(warp * DS_BLOCK + stored * 64 + (lane & 7) * 8) * 2;
  int n = 0;
  for (int r = 0; dqf_item(r, pairs, qBlocks, bh, pos); r++) {
    long long base;
    int qt0, qtLast;
    place(bh, pos, base, qt0, qtLast);
    float acc[DQF_TILES][HEAD_DIM / 2];
#pragma unroll
    for (int i = 0; i < DQF_TILES; i++) {
#pragma unroll
      for (int e = 0; e < HEAD_DIM / 2; e++) acc[i][e] = 0.f;
    }
    for (int kt = 0; kt <= qtLast; kt++, n++) {
      const int stage = n % DQF_STAGES;
      mbar_wait(full(stage), (n / DQF_STAGES) & 1);
      fence_proxy_async();  // the K tile's cp.async writes, seen by the tensor cores' reads
      unsigned a[DQF_TILES][4][4];
#pragma unroll
      for (int i = 0; i < DQF_TILES; i++) {
        const int w = c + DQF_CONSUMERS * i;
        const bool live = kt <= qt0 + w && qt0 + w <= qtLast;
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
          ldsm_x4(sDs(stage, w) + aOff + kk * 4 * DS_BLOCK * 2, a[i][kk][0], a[i][kk][1], a[i][kk][2], a[i][kk][3], true);
#pragma unroll
          for (int e = 0; e < 4; e++) a[i][kk][e] = live ? a[i][kk][e] : 0u;  // a pair past the diagonal or t: exact zeros
        }
      }
      wgmma_fence();
#pragma unroll
      for (int i = 0; i < DQF_TILES; i++) {
#pragma unroll
        for (int kk = 0; kk < 4; kk++) wgmma_rs<HEAD_DIM, 1>(acc[i], a[i][kk], wgmma_desc(sK(stage) + kk * 16 * 128, DQF_COL_BLOCK, 1024), 1);
      }
      wgmma_commit();
      wgmma_wait<0>();
      mbar_arrive(empty(stage));
    }
#pragma unroll
    for (int i = 0; i < DQF_TILES; i++) {
      wgmma_fence_regs(acc[i]);
      wgmma_store_rows_bf16(dq + base, acc[i], (qt0 + c + DQF_CONSUMERS * i) * DQF_ROWS + warp * 16 + g, t, stride, scale);
    }
  }
}
