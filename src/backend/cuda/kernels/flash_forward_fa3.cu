// Causal attention forward on Hopper's warpgroup MMA, warp-specialized as FlashAttention-3 (sm_90a only):
// the same kernel name, arguments and results as flash_forward in flash_attention.cu (prefill with a
// key mask, a cache capacity and row strides; training with the log-sum-exp), which stays the fallback
// on other chips and head sizes. flash.ts holds the shapes and bench/RESULTS-attention.md their timings.
//
// Why: the wgmma kernel before this one (flash_forward_wgmma.cu, deleted) had every thread load K/V by
// cp.async and ended each key tile in a block-wide __syncthreads, so its warpgroups were held in step.
// Here the roles are split:
//   warpgroup 0, the producer (its registers given up with setmaxnreg.dec): loads Q once, then K and V
//     tiles of BK keys into a ring of FA3_STAGES stages, by cp.async, in the 128-byte-swizzled layout
//     wgmma reads (wgmma.cuh). Each thread's copies arrive on the stage's "full" mbarrier when they land
//     (cp.async.mbarrier.arrive.noinc); before refilling a stage it waits on the stage's "empty" one.
//     K and V have barriers of their own: K of a tile is free once S is computed, V only after P·V.
//   warpgroups 1..FA3_CONSUMERS, the consumers (setmaxnreg.inc): 64 query rows each, each with its own
//     online softmax, waiting only on the ring's barriers, never on each other (no __syncthreads in the
//     loop). Per tile: S = Q·Kᵀ (m64nBKk16, both from shared memory), softmax in registers (log2 units,
//     scale and ALiBi folded into one FFMA and exp2, the mask only on tiles that need it), O += P·V
//     (m64nDk16, P from registers, V the MN-major operand). FlashAttention-3's intra-warpgroup overlap:
//     S of tile it and P·V of tile it−1 are issued together; the softmax of tile it runs while P·V of
//     it−1 is still on the tensor cores, and O is rescaled after it.
// FA3_PINGPONG: the consumers take turns issuing their products, round robin (named barriers 1..NC, one
// a consumer: it waits on its own, then lets the next go), so that one's softmax runs while another's
// products have the tensor cores, instead of all softmaxes at once.
//
// Block order (FA3_GROUP = G > 0): the (batch, head) pairs are taken G at a time, and within a group the
// longest query blocks first. The blocks running at once then read the K and V of about G heads (1 MB
// each at t = 2048, head 128), which stay in L2 for all the query blocks of those heads; longest first
// over all heads (G = 0) has every block of a wave on another head, so K and V come from memory again for
// each query block. Longest first inside a group keeps the tail short.
//
// FA3_PERSISTENT: one block an SM (the grid's size, chosen by flash.ts), each looping over work items,
// a (batch, head, query block) each, in the same order (groups, longest first) as the blocks above. The
// items are dealt out by a ticket counter in global memory (atomicAdd, so that a block done early takes
// the next one: the items' lengths differ 16-fold under the causal mask); the producer draws the next
// ticket while it loads the current item. Why: with one 384-thread block an SM nothing hid a block's
// start (launch, the barriers' init, the first Q and K loads, the first softmax with no product under
// it) nor its end (the last P·V, the O stores). Here the producer loads the next item's Q as soon as
// both consumers have issued their last S (a Q-empty barrier), and the ring of K and V simply runs on
// into the next item, so those loads land under the consumers' last tile and their O stores. The counter
// returns to 0 at the end of each launch (the last block to finish resets it), so launches in stream
// order, graph replays included, each start from ticket 0; it lives in the module, so launches of the
// same compiled module must not run concurrently (one stream: they never do). Measured (H100,
// bench/RESULTS-attention.md): faster for training's batch 8 (0.402 against 0.43 ms), slower for one
// 2048-token prompt (0.087–0.091 against 0.068–0.081 ms), so flash.ts uses it for training only.
//
// FA3_TMA: the producer's loads by the TMA unit (cp.async.bulk.tensor with the tensor maps of Q, K and V,
// tensor-map.ts), as FlashAttention-3 does: one thread of the producer warpgroup issues every copy, a box
// of 64 columns × the tile's rows a 64-column slab, which the map's 128-byte swizzle lays out exactly as
// produce_rows does by hand (row r at r·128 of a 1024-byte-aligned slab, 16-byte chunk c at c ^ (r & 7)),
// rows past the sequence filled with zeros by the unit; each full barrier then has one arrival, that
// thread's arrive.expect_tx of the tile's bytes, and completes when they have landed. The other 127
// threads exit after giving up their registers. Why: with cp.async the producer's 128 threads compute 16
// addresses and issue 16 copies each a K or V tile, through the LSU and L1, and the barrier takes 128
// arrivals; the TMA unit does the address generation and the swizzle alone. The kernel is then
// flash_forward_tma, with `batch` and the three maps (Q, K, V) as the last arguments; persistent only (on
// the H200 the persistent kernel gained, 0.369–0.378 against 0.397–0.398 ms at batch 8, while TMA blocks
// without persistence lost for one prompt: bench/RESULTS-attention.md, session tmaf).
//
// Key tiles go from the diagonal back to 0 (as the other kernels): a row's largest scores come first, so
// the rescale of O is mostly skipped. The tiles a warpgroup cannot see (past its last row) are a prefix
// of that order; it still waits for and releases them, so every barrier phase gets all its arrivals.
// ALiBi is taken relative to the warp's first row (constant along a row, it cancels in the softmax; only
// the lse puts it back).
#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef FA3_CONSUMERS
#define FA3_CONSUMERS 2
#endif
#ifndef FA3_BK
#define FA3_BK 128
#endif
#ifndef FA3_STAGES
#define FA3_STAGES 3
#endif
#ifndef FA3_PINGPONG
#define FA3_PINGPONG 0
#endif
#ifndef FA3_GROUP
#define FA3_GROUP 0
#endif
#ifndef FA3_PERSISTENT
#define FA3_PERSISTENT 0
#endif
#ifndef FA3_TMA
#define FA3_TMA 0
#endif
#if HEAD_DIM != 64 && HEAD_DIM != 128
#error "flash_forward_fa3: HEAD_DIM must be 64 or 128 (whole 128-byte swizzle atoms, N of one wgmma)"
#endif
#if FA3_BK != 64 && FA3_BK != 128
#error "flash_forward_fa3: FA3_BK must be 64 or 128"
#endif
#if FA3_TMA && !FA3_PERSISTENT
#error "flash_forward_fa3: FA3_TMA needs FA3_PERSISTENT (the only shape where it won: flash.ts)"
#endif
#if FA3_CONSUMERS != 2 && FA3_CONSUMERS != 3
#error "flash_forward_fa3: FA3_CONSUMERS must be 2 or 3"
#endif
#define NC FA3_CONSUMERS
#define BQ (64 * NC)
#define BK FA3_BK
#define STAGES FA3_STAGES
#define THREADS (128 * (NC + 1))
#define Q_BYTES (BQ * HEAD_DIM * 2)
#define TILE_BYTES (BK * HEAD_DIM * 2)
// Arrivals that fill a stage's K or V: the one issuing thread's expect_tx (TMA), or every producer thread's cp.async.
#define FILL_ARRIVALS (FA3_TMA ? 1 : 128)
// Registers a thread after setmaxnreg: 128·PRODUCER_REGS + 128·NC·CONSUMER_REGS ≤ 65536 (one block an SM).
#if NC == 2
#define PRODUCER_REGS 24
#define CONSUMER_REGS 240
#else
#define PRODUCER_REGS 24
#define CONSUMER_REGS 160
#endif
typedef __nv_bfloat16 bf16;

#include "wgmma.cuh"
#include "flash_common.cuh"
#include "mbarrier.cuh"

// ROWS × HEAD_DIM bf16 from global rows src + r·rowStride into the swizzled layout at dst, by the 128
// producer threads: thread i copies 16-byte column chunk i % CHUNKS of rows i / CHUNKS + PASS·n (PASS = 8
// or 16 rows a pass), so its row's (r & 7), and with it the swizzle, is the same for every n. Rows ≥ valid
// are zero-filled (0·NaN would poison P·V). No commit: the caller arrives on a barrier.
template <int ROWS> __device__ __forceinline__ void produce_rows(unsigned dst, const bf16* src, long long rowStride, int valid, int tid) {
  constexpr int CHUNKS = HEAD_DIM / 8, PASS = 128 / CHUNKS;
  const int c = tid % CHUNKS, r0 = tid / CHUNKS;
  const unsigned to = dst + (c >> 3) * ROWS * 128 + r0 * 128 + (((c & 7) ^ (r0 & 7)) << 4);
  const bf16* from = src + c * 8;
#pragma unroll 4
  for (int n = 0; n < ROWS / PASS; n++) {
    const int r = r0 + PASS * n;
    const bool ok = r < valid;
    cp_async16(to + n * PASS * 128, from + (long long)(ok ? r : 0) * rowStride, ok);
  }
}

#if FA3_TMA
// ROWS × HEAD_DIM bf16 of a tensor map (columns col.., rows row.., block `batch`) into the swizzled
// layout at dst, by the calling thread alone: first the arrival that expects the tile's bytes on `bar`,
// then the copies that complete them.
template <int ROWS> __device__ __forceinline__ void produce_rows_tma(unsigned dst, const TensorMap* map, int col, int row, int batch, unsigned bar) {
  mbar_arrive_expect_tx(bar, ROWS * HEAD_DIM * 2);
  tensor_load_rows<ROWS, HEAD_DIM>(dst, map, col, row, batch, bar);
}
#endif

// One tile's softmax step for the rows of this thread (g and g + 8 of its warp): s holds the raw scores
// of keys k0..k0+BK−1 and leaves holding the unnormalized probabilities; the running max m (log2 units)
// and partial sums l are updated; a0, a1 are the factors O must be multiplied by, `rescale` whether
// any row of the warp needs it.
__device__ __forceinline__ void softmax_tile(float (&s)[BK / 2], float (&m)[2], float (&l)[2], float& a0, float& a1, bool& rescale,
                                             int k0, int warpFirst, int kvLen, long long kvBase, const int* __restrict__ mask,
                                             float slope2, float scale2, int g, int t4) {
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
  const float n0 = fmaxf(m[0], mx0), n1 = fmaxf(m[1], mx1);
  // A row with nothing visible yet keeps max −∞; subtract 0 then, so exp2 gives 0 and not NaN.
  const float u0 = n0 == -INFINITY ? 0.f : n0, u1 = n1 == -INFINITY ? 0.f : n1;
  a0 = fast_exp2(m[0] - u0); a1 = fast_exp2(m[1] - u1);
  rescale = !__all_sync(0xffffffffu, n0 == m[0] && n1 == m[1]);
  m[0] = n0; m[1] = n1;
  l[0] *= a0; l[1] *= a1;
#pragma unroll
  for (int i = 0; i < BK / 2; i++) {
    const float x = fast_exp2(s[i] - ((i & 2) ? u1 : u0));
    s[i] = x;
    l[(i >> 1) & 1] += x;
  }
}

// P (the probabilities of a tile, float) packed into the bf16 A fragments of the P·V products.
__device__ __forceinline__ void pack_p(unsigned (&p)[BK / 16][4], const float (&s)[BK / 2]) {
#pragma unroll
  for (int kk = 0; kk < BK / 16; kk++) {
    p[kk][0] = pack2(s[8 * kk + 0], s[8 * kk + 1]);
    p[kk][1] = pack2(s[8 * kk + 2], s[8 * kk + 3]);
    p[kk][2] = pack2(s[8 * kk + 4], s[8 * kk + 5]);
    p[kk][3] = pack2(s[8 * kk + 6], s[8 * kk + 7]);
  }
}

#if FA3_PERSISTENT
// The ticket counter of the persistent blocks and the count of blocks done with it (see above).
__device__ unsigned fa3NextTicket = 0, fa3BlocksDone = 0;
#endif

// Where work item `linear` (0 first) lies: its (batch, head) pair and its position in the longest-first
// order of query blocks, the order of grouped_block (flash_common.cuh) with the item's number in place of
// the block's: groups of `group` pairs (0: one group of all), inside a group all pairs' longest blocks first.
__device__ __forceinline__ void item_place(int linear, int group, int nBH, int nPos, int& pos, int& bh) {
  if (group == 0) { pos = linear / nBH; bh = linear % nBH; return; }
  const int first = linear / (group * nPos) * group, r = linear % (group * nPos);
  const int inGroup = min(group, nBH - first);
  pos = r / inGroup;
  bh = first + r % inGroup;
}

// The block's query tile, longest first: from the grid (group by group with FA3_GROUP, flash_common.cuh),
// or with FA3_PERSISTENT from work item `item` of nBH·nPos; and what the producer and the consumers
// both derive from it: its (batch, head), first row, the batch's first cache row, and its key tiles
// (keys past the tile's last position are hidden) with the first key of the last of them.
struct QueryTile { int h, b, q0, nTiles, kFirst; long long kvBase; };
__device__ __forceinline__ QueryTile query_tile(int item, int nBH, int nPos, int nHeads, int capacity, int offset, int tq, int kvLen) {
  int qTile, bh;
#if FA3_PERSISTENT
  int pos;
  item_place(item, FA3_GROUP, nBH, nPos, pos, bh);
  qTile = nPos - 1 - pos;
#elif FA3_GROUP
  int pos;
  grouped_block(FA3_GROUP, pos, bh);
  qTile = gridDim.y - 1 - pos;
#else
  qTile = gridDim.y - 1 - blockIdx.y;
  bh = blockIdx.x;
#endif
  QueryTile x;
  x.h = bh % nHeads;
  x.b = bh / nHeads;
  x.q0 = qTile * BQ;
  x.kvBase = (long long)x.b * capacity;
  const int kEnd = min(offset + min(x.q0 + BQ, tq), kvLen);
  x.nTiles = (kEnd + BK - 1) / BK;
  x.kFirst = (x.nTiles - 1) * BK;
  return x;
}

// Grid (batch·heads, ceil(tq / BQ)), THREADS threads, dynamic shared memory Q_BYTES + STAGES·2·TILE_BYTES
// + 1024 (for the alignment of the base). Query i sits at position kvLen − tq + i; keys are rows
// [0, kvLen) of a [batch, capacity] cache. mask, slopes and lse may be null. FA3_PERSISTENT: the kernel
// is flash_forward_persistent with `batch` as a last argument, on a grid of at most one block an SM.
// FA3_TMA: flash_forward_tma, `batch` and the maps of Q ([batch] × tq rows), K and V ([batch] × kvLen
// rows), boxes of BQ and BK rows, as last arguments (q, k and v are then read through the maps only).
#if FA3_TMA
extern "C" __global__ void __launch_bounds__(THREADS, 1) flash_forward_tma(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const int* __restrict__ mask,
    const float* __restrict__ slopes, bf16* __restrict__ out, float* __restrict__ lse,
    int tq, int capacity, int kvLen, int qStride, int kvStride, int oStride, int nHeads, float scale, int batch,
    const __grid_constant__ TensorMap qMap, const __grid_constant__ TensorMap kMap, const __grid_constant__ TensorMap vMap) {
#elif FA3_PERSISTENT
extern "C" __global__ void __launch_bounds__(THREADS, 1) flash_forward_persistent(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const int* __restrict__ mask,
    const float* __restrict__ slopes, bf16* __restrict__ out, float* __restrict__ lse,
    int tq, int capacity, int kvLen, int qStride, int kvStride, int oStride, int nHeads, float scale, int batch) {
#else
extern "C" __global__ void __launch_bounds__(THREADS, 1) flash_forward(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const int* __restrict__ mask,
    const float* __restrict__ slopes, bf16* __restrict__ out, float* __restrict__ lse,
    int tq, int capacity, int kvLen, int qStride, int kvStride, int oStride, int nHeads, float scale) {
#endif
  extern __shared__ __align__(1024) unsigned char smemRaw[];
  // Barriers: Q full, Q empty (persistent only), then per stage K full, V full, K empty, V empty.
  __shared__ __align__(8) unsigned long long barriers[2 + 4 * STAGES];
  const unsigned sQ = ((unsigned)__cvta_generic_to_shared(smemRaw) + 1023u) & ~1023u;
  const unsigned sKV = sQ + Q_BYTES;  // stage s: K at sKV + 2s·TILE_BYTES, V one TILE_BYTES further
  const unsigned bar0 = (unsigned)__cvta_generic_to_shared(barriers);
  const unsigned qFull = bar0, qEmpty = bar0 + 8u;
#define K_FULL(st) (bar0 + 8u * (2 + 4 * (st)))
#define V_FULL(st) (K_FULL(st) + 8u)
#define K_EMPTY(st) (K_FULL(st) + 16u)
#define V_EMPTY(st) (K_FULL(st) + 24u)
  const int wg = threadIdx.x >> 7;
  const int offset = kvLen - tq;  // position of query 0
#if FA3_PERSISTENT
  // The item the producer has published (its ticket), read by everyone after the Q-full barrier. One
  // slot is enough: the producer writes the next only after the Q-empty barrier, which every consumer
  // thread passes after its read.
  __shared__ int published;
  const int nPos = (tq + BQ - 1) / BQ, nBH = batch * nHeads, nItems = nBH * nPos;
#endif

  if (threadIdx.x == 0) {
    // Persistent: Q full also waits for the producer's thread 0, which publishes the item before arriving
    // (with TMA that arrival is the one that expects Q's bytes).
    mbar_init(qFull, FA3_TMA ? 1 : 128 + FA3_PERSISTENT);
    mbar_init(qEmpty, 128 * NC);
#pragma unroll
    for (int st = 0; st < STAGES; st++) {
      mbar_init(K_FULL(st), FILL_ARRIVALS); mbar_init(V_FULL(st), FILL_ARRIVALS);  // the producer's copies
      mbar_init(K_EMPTY(st), 128 * NC); mbar_init(V_EMPTY(st), 128 * NC);  // every consumer thread
    }
    mbar_init_fence();
  }
  __syncthreads();  // the barriers exist before anyone arrives or polls; no block-wide barrier after this

  if (wg == 0) {  // the producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" :: "n"(PRODUCER_REGS));
    const int tid = threadIdx.x;
#if FA3_TMA
    if (tid != 0) return;  // one thread issues every copy (no block-wide barrier waits for the others)
    tensor_map_prefetch(&qMap); tensor_map_prefetch(&kMap); tensor_map_prefetch(&vMap);
#endif
#if FA3_PERSISTENT
    unsigned ticket = 0;
    if (tid == 0) ticket = atomicAdd(&fa3NextTicket, 1u);
    for (int n = 0, ring = 0;; n++) {
      mbar_wait(qEmpty, (n & 1) ^ 1);  // every consumer is past its last S of item n − 1 (n = 0 passes at once)
      if (tid == 0) published = (int)min(ticket, (unsigned)nItems);
#if !FA3_TMA
      asm volatile("bar.sync 8, 128;\n" ::: "memory");  // the producer's threads read it after thread 0's write
#endif
      const int item = published;
      if (tid == 0) {
        // Draw the next ticket now: its round trip runs under this item's loads.
        if (item < nItems) ticket = atomicAdd(&fa3NextTicket, 1u);
#if !FA3_TMA
        mbar_arrive(qFull);  // the published item (release; the consumers' wait acquires it)
#endif
      }
      if (item >= nItems) {  // no work left: the consumers see the same and stop
#if FA3_TMA
        mbar_arrive(qFull);  // the published end (release)
#else
        mbar_arrive_cp_async(qFull);
#endif
        if (tid == 0) {
          // Every block draws tickets until its first past the end, then counts itself here: the last one
          // puts the counter back for the next launch (no block draws any more).
          __threadfence();
          if (atomicAdd(&fa3BlocksDone, 1u) == gridDim.x - 1) { atomicExch(&fa3NextTicket, 0u); atomicExch(&fa3BlocksDone, 0u); }
        }
        break;
      }
      const QueryTile tile = query_tile(item, nBH, nPos, nHeads, capacity, offset, tq, kvLen);
#else
    {
      const int ring = 0;
      const QueryTile tile = query_tile(0, 0, 0, nHeads, capacity, offset, tq, kvLen);
#endif
      const int h = tile.h, b = tile.b, q0 = tile.q0, nTiles = tile.nTiles, kFirst = tile.kFirst;
#if !FA3_TMA
      const long long kvBase = tile.kvBase;
      const bf16* kHead = k + kvBase * kvStride + h * HEAD_DIM;
      const bf16* vHead = v + kvBase * kvStride + h * HEAD_DIM;
#endif
#if FA3_TMA
      // Persistent: this arrival also publishes the item (release; the consumers' wait acquires it).
      produce_rows_tma<BQ>(sQ, &qMap, h * HEAD_DIM, q0, b, qFull);
#else
      produce_rows<BQ>(sQ, q + (long long)b * tq * qStride + (long long)q0 * qStride + h * HEAD_DIM, qStride, tq - q0, tid);
      mbar_arrive_cp_async(qFull);
#endif
      for (int it = 0; it < nTiles; it++) {
        const int k0 = kFirst - it * BK, stage = (ring + it) % STAGES;
        const unsigned free = (((ring + it) / STAGES) & 1) ^ 1;  // the consumers' release of this stage's previous round
        const unsigned sK = sKV + 2 * stage * TILE_BYTES;
        mbar_wait(K_EMPTY(stage), free);
#if FA3_TMA
        produce_rows_tma<BK>(sK, &kMap, h * HEAD_DIM, k0, b, K_FULL(stage));
#else
        produce_rows<BK>(sK, kHead + (long long)k0 * kvStride, kvStride, kvLen - k0, tid);
        mbar_arrive_cp_async(K_FULL(stage));
#endif
        mbar_wait(V_EMPTY(stage), free);
#if FA3_TMA
        produce_rows_tma<BK>(sK + TILE_BYTES, &vMap, h * HEAD_DIM, k0, b, V_FULL(stage));
#else
        produce_rows<BK>(sK + TILE_BYTES, vHead + (long long)k0 * kvStride, kvStride, kvLen - k0, tid);
        mbar_arrive_cp_async(V_FULL(stage));
#endif
      }
#if FA3_PERSISTENT
      ring += nTiles;
#endif
    }
#if !FA3_TMA
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
    return;
  }

  // The consumers.
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" :: "n"(CONSUMER_REGS));
#if FA3_TMA
#define LANDED_FENCE()  // the TMA unit writes through the async proxy, as wgmma reads: the barrier's completion is enough
#else
#define LANDED_FENCE() fence_proxy_async()  // cp.async writes through the generic proxy
#endif
  const int cw = wg - 1, warpInWg = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const float LOG2E = 1.4426950408889634f;
  const float scale2 = scale * LOG2E;
#if FA3_PINGPONG
  // Consumer 0 issues first: the last consumer hands it the first turn. Every tile, skipped or not, is
  // one turn of each, so the barriers' counts match (also from item to item: both consumers take the
  // same items); consumer 0 takes one more turn at the end (the last consumer's final hand-over).
  const int myTurn = 1 + cw, otherTurn = 1 + (cw + 1) % NC;
  if (cw == NC - 1) turn_pass(otherTurn);
#define TURN_WAIT() turn_wait(myTurn)
#define TURN_PASS() turn_pass(otherTurn)
#else
#define TURN_WAIT()
#define TURN_PASS()
#endif
#if FA3_PERSISTENT
  // Q of the item may be refilled once every consumer thread's last S is complete.
#define RELEASE_Q() mbar_arrive(qEmpty)
  for (int n = 0, ring = 0;; n++) {
    mbar_wait(qFull, n & 1);  // the item is published (and its Q loaded)
    const int item = published;
    if (item >= nItems) break;
    const QueryTile tile = query_tile(item, nBH, nPos, nHeads, capacity, offset, tq, kvLen);
#else
#define RELEASE_Q()
  {
    const int ring = 0;
    const QueryTile tile = query_tile(0, 0, 0, nHeads, capacity, offset, tq, kvLen);
#endif
    const int h = tile.h, b = tile.b, q0 = tile.q0, nTiles = tile.nTiles, kFirst = tile.kFirst;
    const long long kvBase = tile.kvBase;
    const int wgRow = q0 + 64 * cw, warpRow = wgRow + 16 * warpInWg;
    const float slope2 = slopes ? slopes[h] * LOG2E : 0.f;
    const bool wgLive = wgRow < tq;
    const int wgLast = offset + min(wgRow + 64, tq) - 1;  // this warpgroup's last position
    const int warpFirst = offset + warpRow;               // this warp's first position (the ALiBi reference)
    // Tiles [0, first) hold no key these rows can see (all of them when the warpgroup has no rows).
    const int first = !wgLive ? nTiles : min(nTiles, max(0, (kFirst - wgLast + BK - 1) / BK));
    if (first == nTiles) RELEASE_Q();  // these rows compute no S at all
    for (int it = 0; it < first; it++) {
      const int stage = (ring + it) % STAGES;
      const unsigned par = ((ring + it) / STAGES) & 1;
      mbar_wait(K_FULL(stage), par); mbar_wait(V_FULL(stage), par);  // this round's phase is the one arrived on
      mbar_arrive(K_EMPTY(stage)); mbar_arrive(V_EMPTY(stage));
      TURN_WAIT();
      TURN_PASS();
    }

    float o[HEAD_DIM / 2];
#pragma unroll
    for (int i = 0; i < HEAD_DIM / 2; i++) o[i] = 0.f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};  // rows g and g + 8: running max (log2), partial sums
    unsigned p[BK / 16][4];
    float s[BK / 2];
    float a0, a1;
    bool rescale;
#if !FA3_PERSISTENT
    mbar_wait(qFull, 0);
#endif
    const unsigned sQw = sQ + cw * 64 * 128;  // this warpgroup's 64 rows inside each 64-column block of Q

    // S = Q·Kᵀ of the tile in `stage`, issued and committed (not waited for).
    auto issueS = [&](int stage) {
      const unsigned sK = sKV + 2 * stage * TILE_BYTES;
#pragma unroll
      for (int kk = 0; kk < HEAD_DIM / 16; kk++) {
        const unsigned within = (kk & 3) * 32;  // byte of the k16 step within its 128-byte row
        wgmma_ss<BK>(s, wgmma_desc(sQw + (kk >> 2) * BQ * 128 + within, 16, 1024),
                     wgmma_desc(sK + (kk >> 2) * BK * 128 + within, 16, 1024), kk > 0);
      }
      wgmma_commit();
    };
    // O += P·V of the tile in `stage`, issued and committed.
    auto issuePV = [&](int stage) {
      const unsigned sV = sKV + 2 * stage * TILE_BYTES + TILE_BYTES;
#pragma unroll
      for (int kk = 0; kk < BK / 16; kk++) wgmma_rs<HEAD_DIM, 1>(o, p[kk], wgmma_desc(sV + kk * 16 * 128, BK * 128, 1024), 1);
      wgmma_commit();
    };

    if (first < nTiles) {
      {
        const int it = first, stage = (ring + it) % STAGES;
        mbar_wait(K_FULL(stage), ((ring + it) / STAGES) & 1);
        LANDED_FENCE();  // the copies, seen by the tensor cores' reads
        TURN_WAIT();
        wgmma_fence();
        issueS(stage);
        TURN_PASS();
        wgmma_wait<0>();
        wgmma_fence_regs(s);
        mbar_arrive(K_EMPTY(stage));
        if (it == nTiles - 1) RELEASE_Q();
        softmax_tile(s, mrow, lrow, a0, a1, rescale, kFirst - it * BK, warpFirst, kvLen, kvBase, mask, slope2, scale2, g, t4);
        pack_p(p, s);  // O is still zero: nothing to rescale
      }
      for (int it = first + 1; it < nTiles; it++) {
        const int stage = (ring + it) % STAGES, prev = (ring + it - 1) % STAGES;
        mbar_wait(K_FULL(stage), ((ring + it) / STAGES) & 1);
        mbar_wait(V_FULL(prev), ((ring + it - 1) / STAGES) & 1);
        LANDED_FENCE();
        TURN_WAIT();
        wgmma_fence();
        issueS(stage);
        issuePV(prev);
        TURN_PASS();
        wgmma_wait<1>();  // S of this tile; P·V of the previous one may still run
        wgmma_fence_regs(s);
        mbar_arrive(K_EMPTY(stage));
        if (it == nTiles - 1) RELEASE_Q();
        softmax_tile(s, mrow, lrow, a0, a1, rescale, kFirst - it * BK, warpFirst, kvLen, kvBase, mask, slope2, scale2, g, t4);
        wgmma_wait<0>();  // P·V of the previous tile: O and the P registers are free
        wgmma_fence_regs(o);
        mbar_arrive(V_EMPTY(prev));
        if (rescale) {
#pragma unroll
          for (int i = 0; i < HEAD_DIM / 2; i++) o[i] *= (i & 2) ? a1 : a0;
        }
        pack_p(p, s);
      }
      const int last = (ring + nTiles - 1) % STAGES;
      mbar_wait(V_FULL(last), ((ring + nTiles - 1) / STAGES) & 1);
      LANDED_FENCE();
      wgmma_fence();
      issuePV(last);
      wgmma_wait<0>();
      wgmma_fence_regs(o);
      mbar_arrive(V_EMPTY(last));  // (the ring's last release; unused without FA3_PERSISTENT)
    }

    if (wgLive) {
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
#if FA3_PERSISTENT
    ring += nTiles;
#endif
  }
#if FA3_PINGPONG
  if (cw == 0) turn_wait(myTurn);  // the last consumer's final hand-over
#endif
#undef RELEASE_Q
#undef LANDED_FENCE
#undef TURN_WAIT
#undef TURN_PASS
#undef K_FULL
#undef V_FULL
#undef K_EMPTY
#undef V_EMPTY
}
