// Attention backward, flash-attention style: the probabilities are rebuilt from q, k and the forward's
// log-sum-exp (nothing t×t is kept), ALiBi and the causal mask inside the kernels.
//   p_ij = exp(scale·q_i·k_j − (i − j)·slope − lse_i),  D_i = dO_i·o_i (attention_row_dot)
//   dv_j = Σ_i p_ij dO_i,  ds_ij = p_ij (dO_i·v_j − D_i),  dq_i = scale Σ_j ds_ij k_j,  dk_j = scale Σ_i ds_ij q_i
// Two kernels, neither with atomics (deterministic; as Triton's fused-attention tutorial splits it): one
// owns 64 keys and walks the queries at or after them (dk, dv), the other owns 64 queries and walks the
// keys at or before them (dq); each recomputes the scores it needs.
//
// Tensor-core versions (bf16, HEAD_DIM a multiple of 16): 4 warps, a warp owns 16 rows of its block's
// 64 (the stored-ds dq pass: 8 warps, 128 rows); mma.sync m16n8k16 with fp32 accumulators. Fragment
// layouts (lane = 4·g + t): A {(g, 2t..), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}, B {(k 2t.., n g),
// (k 2t+8.., n g)}, C {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}. A C tile of 16 rows × 16 columns
// (two n-tiles) is, packed to bf16, the A fragment of the next product: that is how P and dS feed dV,
// dK and dQ. Tiles whose rows are the reduction dimension are read with ldmatrix.trans.
//
// Each streamed tile of 64 rows is worked in chunks of BWD_CHUNK columns (16, 32 or 64): the scores
// and dP of a whole chunk are computed before any is used, so 2·BWD_CHUNK/8 independent mma chains
// keep the tensor pipe busy (one 16-column chunk at a time left four chains of eight dependent mmas).
// The dk/dv kernel reads its own K and V fragments from shared memory at each use, so the registers
// go to the dk, dv accumulators and the chunk's scores.
#define BT 64
#define NWARP 4
#ifndef HEAD_DIM
#define HEAD_DIM 16
#endif
#ifndef BWD_CHUNK
#define BWD_CHUNK 32
#endif
#define CH BWD_CHUNK
#define ROW (HEAD_DIM + 8)
#define DSTEPS (HEAD_DIM / 16)
#define DTILES (HEAD_DIM / 8)
typedef __nv_bfloat16 bf16;
#include "flash_common.cuh"

// The A fragment of a 16 × 16 block of a shared [row][ROW] tile at (r0, c0).
__device__ __forceinline__ void a_frag(unsigned* a, const bf16 (*tile)[ROW], int r0, int c0, int lane) {
  ldsm_x4(&tile[r0 + (lane & 15)][c0 + (lane >> 4) * 8], a[0], a[1], a[2], a[3], false);
}
// The B fragments (one k-step of 16 at column c0) of two n-tiles: rows [n0, n0+16) of a shared [n][k] tile.
__device__ __forceinline__ void b_frags2(unsigned* b, const bf16 (*tile)[ROW], int n0, int c0, int lane) {
  ldsm_x4(&tile[n0 + (lane >> 4) * 8 + (lane & 7)][c0 + ((lane >> 3) & 1) * 8], b[0], b[1], b[2], b[3], false);
}
// acc[DTILES][4] += P(16 rows × 16 tile rows k0..k0+15, packed A) · tile[k0..k0+15][0..HEAD_DIM).
__device__ __forceinline__ void p_times_tile(float (*acc)[4], const unsigned* pa, const bf16 (*tile)[ROW], int k0, int lane) {
  const int mat = lane >> 3;
#pragma unroll
  for (int dn = 0; dn < HEAD_DIM / 16; dn++) {
    unsigned v0, v1, v2, v3;
    ldsm_x4(&tile[k0 + (mat & 1) * 8 + (lane & 7)][dn * 16 + (mat >> 1) * 8], v0, v1, v2, v3, true);
    mma16816(acc[2 * dn], pa, v0, v1);
    mma16816(acc[2 * dn + 1], pa, v2, v3);
  }
}
// Columns [2kk·8, 2kk·8 + 16) of a C block, packed to bf16: the A fragment of the next product.
__device__ __forceinline__ void pack_a(unsigned* a, const float (*c)[4], int kk) {
  a[0] = pack2(c[2 * kk][0], c[2 * kk][1]);
  a[1] = pack2(c[2 * kk][2], c[2 * kk][3]);
  a[2] = pack2(c[2 * kk + 1][0], c[2 * kk + 1][1]);
  a[3] = pack2(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}
// The A fragments of 16 rows (all of the head) of a global [.., stride] matrix; rows ≥ t read as 0.
__device__ __forceinline__ void load_rows_a(unsigned (*a)[4], const bf16* base, int r0, int t, int stride, int lane) {
  const int g = lane >> 2, t4 = lane & 3, ra = r0 + g, rb = ra + 8;
#pragma unroll
  for (int s = 0; s < DSTEPS; s++) {
    const int c = s * 16 + 2 * t4;
    a[s][0] = ra < t ? *reinterpret_cast<const unsigned*>(base + (long long)ra * stride + c) : 0u;
    a[s][1] = rb < t ? *reinterpret_cast<const unsigned*>(base + (long long)rb * stride + c) : 0u;
    a[s][2] = ra < t ? *reinterpret_cast<const unsigned*>(base + (long long)ra * stride + c + 8) : 0u;
    a[s][3] = rb < t ? *reinterpret_cast<const unsigned*>(base + (long long)rb * stride + c + 8) : 0u;
  }
}
// The other way: a C tile of 16 rows (ra = the warp's first row + g, rb = ra + 8) × HEAD_DIM, times
// `scale`, as bf16 into a global [.., stride] matrix; rows ≥ t are dropped.
__device__ __forceinline__ void store_rows_c(bf16* base, const float (*acc)[4], int ra, int rb, int t, int stride, float scale, int lane) {
  const int t4 = lane & 3;
#pragma unroll
  for (int n = 0; n < DTILES; n++) {
    const int c = n * 8 + 2 * t4;
    if (ra < t) *reinterpret_cast<__nv_bfloat162*>(base + (long long)ra * stride + c) = __floats2bfloat162_rn(acc[n][0] * scale, acc[n][1] * scale);
    if (rb < t) *reinterpret_cast<__nv_bfloat162*>(base + (long long)rb * stride + c) = __floats2bfloat162_rn(acc[n][2] * scale, acc[n][3] * scale);
  }
}
// Two tiles of 64 rows × HEAD_DIM into shared memory (cp.async by the whole block, zero-filled past t),
// one commit group.
__device__ __forceinline__ void load_pair(bf16 (*x)[ROW], bf16 (*y)[ROW], const bf16* xg, const bf16* yg, int r0, int t, int stride) {
  for (int idx = threadIdx.x; idx < BT * (HEAD_DIM / 8); idx += blockDim.x) {
    const int r = idx / (HEAD_DIM / 8), c = (idx - r * (HEAD_DIM / 8)) * 8;
    const bool ok = r0 + r < t;
    const long long off = (long long)(ok ? r0 + r : 0) * stride + c;
    cp_async16(&x[r][c], xg + off, ok);
    cp_async16(&y[r][c], yg + off, ok);
  }
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// dq for 64 queries a block: grid (batch·nHeads, ceil(t/64)), 128 threads, shared 2 stages × (K, V).
extern "C" __global__ void __launch_bounds__(NWARP * 32, 2) flash_backward_dq(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const bf16* __restrict__ dOut,
    const float* __restrict__ lse, const float* __restrict__ D, const float* __restrict__ slopes, bf16* __restrict__ dq,
    int t, int nHeads, float scale) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  bf16 (*tiles)[2][BT][ROW] = reinterpret_cast<bf16 (*)[2][BT][ROW]>(smemRaw);
  const int qTile = gridDim.y - 1 - blockIdx.y;  // longest tiles first over the whole grid
  const int h = blockIdx.x % nHeads, b = blockIdx.x / nHeads, stride = nHeads * HEAD_DIM;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const float LOG2E = 1.4426950408889634f;
  const float slope2 = slopes ? slopes[h] * LOG2E : 0.f, scale2 = scale * LOG2E;
  const long long base = (long long)b * t * stride + h * HEAD_DIM;
  const int q0 = qTile * BT, rw = q0 + warp * 16, r0 = rw + g, r1 = r0 + 8;
  unsigned qa[DSTEPS][4], da[DSTEPS][4];
  load_rows_a(qa, q + base, rw, t, stride, lane);
  load_rows_a(da, dOut + base, rw, t, stride, lane);
  const float* lrow = lse + ((long long)b * nHeads + h) * t;
  const float* drow = D + ((long long)b * nHeads + h) * t;
  // slope·(j − i) − lse_i (log2 units) = slope·(j − rw) − [lse_i + slope·(i − rw)]: a term per key column,
  // shared by the thread's two rows, and a term per row (L0, L1) for the whole kernel.
  const float L0 = r0 < t ? fmaf(lrow[r0], LOG2E, slope2 * (float)g) : INFINITY;
  const float L1 = r1 < t ? fmaf(lrow[r1], LOG2E, slope2 * (float)(g + 8)) : INFINITY;
  const float D0 = r0 < t ? drow[r0] : 0.f, D1 = r1 < t ? drow[r1] : 0.f;
  float acc[DTILES][4];
#pragma unroll
  for (int n = 0; n < DTILES; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

  const int kEnd = min(q0 + BT, t);
  const bool warpLive = rw < t;
  load_pair(tiles[0][0], tiles[0][1], k + base, v + base, 0, t, stride);
  for (int k0 = 0, it = 0; k0 < kEnd; k0 += BT, it++) {
    if (k0 + BT < kEnd) load_pair(tiles[(it + 1) & 1][0], tiles[(it + 1) & 1][1], k + base, v + base, k0 + BT, t, stride);
    else asm volatile("cp.async.commit_group;\n" ::: "memory");
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    __syncthreads();
    const bf16 (*Ks)[ROW] = tiles[it & 1][0];
    const bf16 (*Vs)[ROW] = tiles[it & 1][1];
#pragma unroll 1
    for (int c0 = 0; c0 < BT; c0 += CH) {
      const int kc = k0 + c0;
      if (!warpLive || kc > rw + 15) continue;  // every key of the chunk after every row of the warp
      float s[CH / 8][4], dp[CH / 8][4];
#pragma unroll
      for (int n = 0; n < CH / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
#pragma unroll
      for (int d = 0; d < DSTEPS; d++) {
#pragma unroll
        for (int n = 0; n < CH / 8; n += 2) {
          unsigned bk[4], bv[4];
          b_frags2(bk, Ks, c0 + n * 8, d * 16, lane);
          b_frags2(bv, Vs, c0 + n * 8, d * 16, lane);
          mma16816(s[n], qa[d], bk[0], bk[1]);
          mma16816(s[n + 1], qa[d], bk[2], bk[3]);
          mma16816(dp[n], da[d], bv[0], bv[1]);
          mma16816(dp[n + 1], da[d], bv[2], bv[3]);
        }
      }
      const bool needMask = kc + CH - 1 > rw || kc + CH > t;
      const float colBase = slope2 * (float)(kc + 2 * t4 - rw);
#pragma unroll
      for (int n = 0; n < CH / 8; n++) {
        const float cb0 = fmaf(slope2, (float)(n * 8), colBase), cb1 = fmaf(slope2, (float)(n * 8 + 1), colBase);
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int j = kc + n * 8 + 2 * t4 + (e & 1), i = e < 2 ? r0 : r1;
          float p = fast_exp2(fmaf(s[n][e], scale2, (e & 1) ? cb1 : cb0) - (e < 2 ? L0 : L1));
          if (needMask && (j > i || j >= t)) p = 0.f;
          s[n][e] = p * (dp[n][e] - (e < 2 ? D0 : D1));  // ds
        }
      }
#pragma unroll
      for (int kk = 0; kk < CH / 16; kk++) {
        unsigned pa[4];
        pack_a(pa, s, kk);
        p_times_tile(acc, pa, Ks, c0 + kk * 16, lane);
      }
    }
    __syncthreads();
  }
  store_rows_c(dq + base, acc, r0, r1, t, stride, scale, lane);
}

#include "flash_backward_ds.cuh"

// dq from the dsᵀ tiles flash_backward_dkdv stored (run it first): dq_i = scale Σ_j ds_ij k_j, the only
// product left, so nothing is recomputed. 128 queries a block (two 64-row tiles), a warp 16 of them;
// grid (batch·nHeads, ceil(t/128)), 256 threads. Memory-bound: each K tile is read once for both query
// tiles (64-query blocks, reading it for each, ran 10-25 % slower; 256-query blocks or 3 stages were no
// faster: bench/RESULTS-attention.md). Shared: 2 stages × (K tile, the dsᵀ tile of each query tile).
// Deterministic: every dq row is one warp's sum, in key order. (On sm_90a with heads of 64 or 128, flash.ts
// runs flash_backward_wgmma.cu's flash_backward_dq_wgmma instead: the same sums on a head-major grid, 1.4×.)
#define DQS_QUERIES 128
#define DQS_STAGES 2
#define DQS_WARPS (DQS_QUERIES / 16)
#define DQS_QTILES (DQS_QUERIES / BT)
extern "C" __global__ void __launch_bounds__(DQS_WARPS * 32, 2) flash_backward_dq_stored(
    const bf16* __restrict__ k, const bf16* __restrict__ ds, bf16* __restrict__ dq, int t, int nHeads, float scale) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  bf16 (*Kt)[BT][ROW] = reinterpret_cast<bf16 (*)[BT][ROW]>(smemRaw);                                       // [stage]
  bf16 (*St)[DQS_QTILES][BT * BT] = reinterpret_cast<bf16 (*)[DQS_QTILES][BT * BT]>(smemRaw + DQS_STAGES * BT * ROW * 2);  // [stage][query tile]
  const int bh = blockIdx.x, h = bh % nHeads, b = bh / nHeads, stride = nHeads * HEAD_DIM;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const long long base = (long long)b * t * stride + h * HEAD_DIM;
  const int tiles = (t + BT - 1) / BT;
  const int qt0 = (gridDim.y - 1 - blockIdx.y) * DQS_QTILES;  // longest walks first over the whole grid
  const int qtLast = min(qt0 + DQS_QTILES, tiles) - 1;
  const int myQt = qt0 + warp / 4, qb = warp & 3;  // the warp's query tile and its 16-row block in it
  const int r0 = qt0 * BT + warp * 16 + g, r1 = r0 + 8;
  // Key tile kt into stage kt % DQS_STAGES (nothing past the last: an empty group keeps the count).
  auto load = [&](int kt) {
    const int stage = kt % DQS_STAGES, k0 = kt * BT;
    if (kt <= qtLast) {
      for (int idx = threadIdx.x; idx < BT * (HEAD_DIM / 8); idx += blockDim.x) {
        const int r = idx / (HEAD_DIM / 8), c = (idx - r * (HEAD_DIM / 8)) * 8;
        const bool ok = k0 + r < t;
        cp_async16(&Kt[stage][r][c], k + base + (long long)(ok ? k0 + r : 0) * stride + c, ok);
      }
#pragma unroll
      for (int hq = 0; hq < DQS_QTILES; hq++) {
        const int qt = qt0 + hq;
        if (qt > qtLast || kt > qt) continue;  // no such pair: that query tile's warps skip this key tile
        const bf16* src = ds + dsTile(bh, qt, kt, t);
        for (int idx = threadIdx.x; idx < BT * BT / 8; idx += blockDim.x) cp_async16(&St[stage][hq][idx * 8], src + idx * 8, true);
      }
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  };
  float acc[DTILES][4];
#pragma unroll
  for (int n = 0; n < DTILES; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  // The A fragment (16 queries × 16 keys) is the transpose of the stored one: its registers 0..3 are
  // the stored registers 0, 2, 1, 3 (keys 0-7 / 8-15 × queries 0-7 / 8-15), one 8 × 8 matrix each.
  const int mi = lane >> 3, stored = ((mi & 1) << 1) | (mi >> 1);
#pragma unroll
  for (int s = 0; s < DQS_STAGES - 1; s++) load(s);
  for (int kt = 0; kt <= qtLast; kt++) {
    load(kt + DQS_STAGES - 1);
    asm volatile("cp.async.wait_group %0;\n" :: "n"(DQS_STAGES - 1) : "memory");
    __syncthreads();
    if (kt <= myQt && myQt <= qtLast) {
      const bf16 (*Ks)[ROW] = Kt[kt % DQS_STAGES];
      const bf16* Ss = St[kt % DQS_STAGES][warp / 4] + qb * DS_BLOCK + stored * 64 + (lane & 7) * 8;
#pragma unroll
      for (int kk = 0; kk < BT / 16; kk++) {
        unsigned a[4];
        ldsm_x4(Ss + kk * 4 * DS_BLOCK, a[0], a[1], a[2], a[3], true);
        p_times_tile(acc, a, Ks, kk * 16, lane);
      }
    }
    __syncthreads();
  }
  store_rows_c(dq + base, acc, r0, r1, t, stride, scale, lane);
}

// (On sm_90a with heads of 64 or 128, flash.ts runs flash_backward_wgmma.cu's dk/dv kernel instead: the
// same products and dsᵀ layout on warpgroup MMA.)
// dk and dv for 64 keys a block, a warp 16 of them: grid (batch·nHeads, ceil(t/64)), 128 threads. The
// block walks the 64-query tiles at or after its keys. Shared: this block's K and V rows (A fragments by
// ldmatrix at each use), 2 stages × (Q, dO) tiles, and each stage's lse and D. (128 keys a block at 8
// warps, one block an SM, reads each Q and dO tile once for twice the keys but ran 10 % slower:
// bench/RESULTS-attention.md.)
extern "C" __global__ void __launch_bounds__(NWARP * 32, 2) flash_backward_dkdv(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const bf16* __restrict__ dOut,
    const float* __restrict__ lse, const float* __restrict__ D, const float* __restrict__ slopes,
    bf16* __restrict__ dk, bf16* __restrict__ dv, bf16* __restrict__ dsOut, int t, int nHeads, float scale) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  bf16 (*own)[BT][ROW] = reinterpret_cast<bf16 (*)[BT][ROW]>(smemRaw);                          // [K or V][row][col]
  bf16 (*tiles)[2][BT][ROW] = reinterpret_cast<bf16 (*)[2][BT][ROW]>(smemRaw + 2 * BT * ROW * 2);  // [stage][Q or dO]
  float (*rowTerms)[2][BT] = reinterpret_cast<float (*)[2][BT]>(smemRaw + 6 * BT * ROW * 2);      // [stage][lse·log2e or D]
  const int kTile = blockIdx.y;  // key tile 0 walks every query tile: the longest start first
  const int bh = blockIdx.x, h = bh % nHeads, b = bh / nHeads, stride = nHeads * HEAD_DIM;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const float LOG2E = 1.4426950408889634f;
  const float slope2 = slopes ? slopes[h] * LOG2E : 0.f, scale2 = scale * LOG2E;
  const long long base = (long long)b * t * stride + h * HEAD_DIM;
  const float* lrow = lse + (long long)bh * t;
  const float* drow = D + (long long)bh * t;
  const int k0 = kTile * BT, kw = k0 + warp * 16, j0 = kw + g, j1 = j0 + 8;
  const bool warpLive = kw < t;
  const float kb0 = slope2 * (float)(j0 - k0), kb1 = slope2 * (float)(j1 - k0);  // the per-key ALiBi terms

  auto loadStage = [&](int stage, int q0) {
    load_pair(tiles[stage][0], tiles[stage][1], q + base, dOut + base, q0, t, stride);
    for (int r = threadIdx.x; r < BT; r += blockDim.x) {
      const bool ok = q0 + r < t;
      // slope·(j − i) − lse_i (log2 units) = slope·(j − k0) − [lse_i + slope·(i − k0)]: the bracket per
      // query, here; the first term per key, in registers. exp2(x − ∞) = 0: rows past t add nothing.
      rowTerms[stage][0][r] = ok ? fmaf(lrow[q0 + r], LOG2E, slope2 * (float)(q0 + r - k0)) : INFINITY;
      rowTerms[stage][1][r] = ok ? drow[q0 + r] : 0.f;
    }
  };
  load_pair(own[0], own[1], k + base, v + base, k0, t, stride);
  loadStage(0, k0);
  float dkAcc[DTILES][4], dvAcc[DTILES][4];
#pragma unroll
  for (int n = 0; n < DTILES; n++) {
    dkAcc[n][0] = dkAcc[n][1] = dkAcc[n][2] = dkAcc[n][3] = 0.f;
    dvAcc[n][0] = dvAcc[n][1] = dvAcc[n][2] = dvAcc[n][3] = 0.f;
  }
  for (int q0 = k0, it = 0; q0 < t; q0 += BT, it++) {
    if (q0 + BT < t) loadStage((it + 1) & 1, q0 + BT);
    else asm volatile("cp.async.commit_group;\n" ::: "memory");
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    __syncthreads();
    const bf16 (*Qs)[ROW] = tiles[it & 1][0];
    const bf16 (*Ds)[ROW] = tiles[it & 1][1];
    const float* Ls = rowTerms[it & 1][0];
    const float* Dr = rowTerms[it & 1][1];
#pragma unroll 1
    for (int c0 = 0; c0 < BT; c0 += CH) {
      const int qc = q0 + c0;
      if (!warpLive || qc + CH - 1 < kw) {  // every query of the chunk before every key of the warp
        if (dsOut) {  // the stored blocks must still read as zeros (flash_backward_dq_stored reads them whole)
          bf16* tileDs = dsOut + dsTile(bh, q0 / BT, kTile, t) + warp * 4 * DS_BLOCK + 2 * lane;
#pragma unroll
          for (int kk = 0; kk < CH / 16; kk++) {
#pragma unroll
            for (int r = 0; r < 4; r++) *reinterpret_cast<unsigned*>(tileDs + (c0 / 16 + kk) * DS_BLOCK + r * 64) = 0u;
          }
        }
        continue;
      }
      float st[CH / 8][4], dpt[CH / 8][4];  // transposed: rows = keys, columns = queries
#pragma unroll
      for (int n = 0; n < CH / 8; n++) st[n][0] = st[n][1] = st[n][2] = st[n][3] = dpt[n][0] = dpt[n][1] = dpt[n][2] = dpt[n][3] = 0.f;
#pragma unroll
      for (int d = 0; d < DSTEPS; d++) {
        unsigned ka[4], va[4];
        a_frag(ka, own[0], warp * 16, d * 16, lane);
        a_frag(va, own[1], warp * 16, d * 16, lane);
#pragma unroll
        for (int n = 0; n < CH / 8; n += 2) {
          unsigned bq[4], bd[4];
          b_frags2(bq, Qs, c0 + n * 8, d * 16, lane);
          b_frags2(bd, Ds, c0 + n * 8, d * 16, lane);
          mma16816(st[n], ka, bq[0], bq[1]);
          mma16816(st[n + 1], ka, bq[2], bq[3]);
          mma16816(dpt[n], va, bd[0], bd[1]);
          mma16816(dpt[n + 1], va, bd[2], bd[3]);
        }
      }
      const bool needMask = qc < kw + 15 || qc + CH > t;
#pragma unroll
      for (int n = 0; n < CH / 8; n++) {
        const int col0 = c0 + n * 8 + 2 * t4;
        const float2 lq = *reinterpret_cast<const float2*>(&Ls[col0]), dq2 = *reinterpret_cast<const float2*>(&Dr[col0]);
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int col = col0 + (e & 1), i = q0 + col, j = e < 2 ? j0 : j1;
          float x = fast_exp2(fmaf(st[n][e], scale2, e < 2 ? kb0 : kb1) - ((e & 1) ? lq.y : lq.x));
          if (needMask && (j > i || i >= t)) x = 0.f;
          st[n][e] = x;                                            // p
          dpt[n][e] = x * (dpt[n][e] - ((e & 1) ? dq2.y : dq2.x));  // ds
        }
      }
#pragma unroll
      for (int kk = 0; kk < CH / 16; kk++) {
        unsigned pa[4], sa[4];
        pack_a(pa, st, kk);
        pack_a(sa, dpt, kk);
        p_times_tile(dvAcc, pa, Ds, c0 + kk * 16, lane);
        p_times_tile(dkAcc, sa, Qs, c0 + kk * 16, lane);
        if (dsOut) {  // dsᵀ as bf16, in the fragment layout above (this warp's 16 keys): the products dq needs
          bf16* tileDs = dsOut + dsTile(bh, q0 / BT, kTile, t) + warp * 4 * DS_BLOCK + 2 * lane;
#pragma unroll
          for (int r = 0; r < 4; r++) *reinterpret_cast<unsigned*>(tileDs + (c0 / 16 + kk) * DS_BLOCK + r * 64) = sa[r];
        }
      }
    }
    __syncthreads();
  }
  store_rows_c(dk + (long long)b * t * (DKDV_DK_WIDTHS * stride) + h * HEAD_DIM, dkAcc, j0, j1, t, DKDV_DK_WIDTHS * stride, scale, lane);
  store_rows_c(dv + (long long)b * t * (DKDV_DV_WIDTHS * stride) + h * HEAD_DIM, dvAcc, j0, j1, t, DKDV_DV_WIDTHS * stride, 1.f, lane);
}

// Scalar versions (any T, head size ≤ 256, optional key mask: masked keys get no probability).
// dq: one warp a query; a lane a key of each 32, then the lanes' ds broadcast to add ds·k rows.
#define MAXE 8
extern "C" __global__ void attention_backward_dq_scalar(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ dOut, const float* __restrict__ lse, const float* __restrict__ D, const int* __restrict__ mask,
    const float* __restrict__ slopes, T* __restrict__ dq, int t, int nHeads, int dHead, float scale) {
  __shared__ float qs[4][256], gs[4][256];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i = blockIdx.x * 4 + warp, h = blockIdx.y, b = blockIdx.z;
  if (i >= t) return;
  const int d = nHeads * dHead;
  const long long rowBase = (long long)b * t * d + h * dHead;
  for (int c = lane; c < dHead; c += 32) { qs[warp][c] = ld(q[rowBase + (long long)i * d + c]); gs[warp][c] = ld(dOut[rowBase + (long long)i * d + c]); }
  __syncwarp();
  const float slope = slopes ? slopes[h] : 0.f;
  const float L = lse[((long long)b * nHeads + h) * t + i], Di = D[((long long)b * nHeads + h) * t + i];
  float acc[MAXE];
#pragma unroll
  for (int e = 0; e < MAXE; e++) acc[e] = 0.f;
  if (L != -INFINITY) {
    for (int j0 = 0; j0 <= i; j0 += 32) {
      const int j = j0 + lane;
      float ds = 0.f;
      if (j <= i && (!mask || mask[(long long)b * t + j] != 0)) {
        const T* kr = k + rowBase + (long long)j * d;
        const T* vr = v + rowBase + (long long)j * d;
        float s = 0.f, dp = 0.f;
        for (int c = 0; c < dHead; c++) { s = fmaf(qs[warp][c], ld(kr[c]), s); dp = fmaf(gs[warp][c], ld(vr[c]), dp); }
        const float p = expf(s * scale - (float)(i - j) * slope - L);
        ds = p * (dp - Di);
      }
      for (int jj = 0; jj < 32; jj++) {
        const float dsj = __shfl_sync(0xffffffffu, ds, jj);
        if (dsj == 0.f) continue;
        const T* kr = k + rowBase + (long long)(j0 + jj) * d;
#pragma unroll
        for (int e = 0; e < MAXE; e++) { const int c = lane + 32 * e; if (c < dHead) acc[e] = fmaf(dsj, ld(kr[c]), acc[e]); }
      }
    }
  }
#pragma unroll
  for (int e = 0; e < MAXE; e++) { const int c = lane + 32 * e; if (c < dHead) dq[rowBase + (long long)i * d + c] = st<T>(acc[e] * scale); }
}
// dk, dv: one warp a key; a lane a query of each 32 (queries at or after the key).
extern "C" __global__ void attention_backward_dkdv_scalar(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ dOut, const float* __restrict__ lse, const float* __restrict__ D, const int* __restrict__ mask,
    const float* __restrict__ slopes, T* __restrict__ dk, T* __restrict__ dv, int t, int nHeads, int dHead, float scale) {
  __shared__ float ks[4][256], vs[4][256];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int j = blockIdx.x * 4 + warp, h = blockIdx.y, b = blockIdx.z;
  if (j >= t) return;
  const int d = nHeads * dHead;
  const long long rowBase = (long long)b * t * d + h * dHead;
  for (int c = lane; c < dHead; c += 32) { ks[warp][c] = ld(k[rowBase + (long long)j * d + c]); vs[warp][c] = ld(v[rowBase + (long long)j * d + c]); }
  __syncwarp();
  const float slope = slopes ? slopes[h] : 0.f;
  const float* lrow = lse + ((long long)b * nHeads + h) * t;
  const float* drow = D + ((long long)b * nHeads + h) * t;
  float dkAcc[MAXE], dvAcc[MAXE];
#pragma unroll
  for (int e = 0; e < MAXE; e++) dkAcc[e] = dvAcc[e] = 0.f;
  const bool visible = !mask || mask[(long long)b * t + j] != 0;
  for (int i0 = j; visible && i0 < t; i0 += 32) {
    const int i = i0 + lane;
    float p = 0.f, ds = 0.f;
    if (i < t && lrow[i] != -INFINITY) {
      const T* qr = q + rowBase + (long long)i * d;
      const T* gr = dOut + rowBase + (long long)i * d;
      float s = 0.f, dp = 0.f;
      for (int c = 0; c < dHead; c++) { s = fmaf(ld(qr[c]), ks[warp][c], s); dp = fmaf(ld(gr[c]), vs[warp][c], dp); }
      p = expf(s * scale - (float)(i - j) * slope - lrow[i]);
      ds = p * (dp - drow[i]);
    }
    for (int ii = 0; ii < 32; ii++) {
      const float pi = __shfl_sync(0xffffffffu, p, ii), dsi = __shfl_sync(0xffffffffu, ds, ii);
      if (pi == 0.f && dsi == 0.f) continue;
      const T* qr = q + rowBase + (long long)(i0 + ii) * d;
      const T* gr = dOut + rowBase + (long long)(i0 + ii) * d;
#pragma unroll
      for (int e = 0; e < MAXE; e++) {
        const int c = lane + 32 * e;
        if (c < dHead) { dvAcc[e] = fmaf(pi, ld(gr[c]), dvAcc[e]); dkAcc[e] = fmaf(dsi, ld(qr[c]), dkAcc[e]); }
      }
    }
  }
#pragma unroll
  for (int e = 0; e < MAXE; e++) {
    const int c = lane + 32 * e;
    if (c < dHead) {
      dk[(long long)b * t * (DKDV_DK_WIDTHS * d) + h * dHead + (long long)j * (DKDV_DK_WIDTHS * d) + c] = st<T>(dkAcc[e] * scale);
      dv[(long long)b * t * (DKDV_DV_WIDTHS * d) + h * dHead + (long long)j * (DKDV_DV_WIDTHS * d) + c] = st<T>(dvAcc[e]);
    }
  }
}
