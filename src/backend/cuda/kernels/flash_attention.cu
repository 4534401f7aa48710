// Causal attention forward, ONE kernel for prefill (inference) and training:
//   flash_forward: tensor cores, bf16, HEAD_DIM a multiple of 16. Prefill passes a key mask (left
//     padding: masked keys get -1e30 as in attention_decode), a cache capacity and row strides, and no
//     lse; training passes queries = keys, no mask, and gets, per (batch, head, query), the natural
//     log-sum-exp of the scaled, biased scores, which is all flash_backward.cu needs.
//   attention_forward_scalar: any T and head size ≤ 256, one warp a query (the float32 path and the
//     check of the fast one); masked keys are left out as the CPU reference leaves them out.
//   attention_row_dot8, attention_row_dot: D = dO·O per row and head, the backward pass's row term.
//
// flash_forward, FA2-shaped: a block owns BQ = FLASH_WARPS·16·FLASH_MT query rows, each warp
// 16·FLASH_MT consecutive rows (FLASH_MT m16 tiles: every K/V fragment read from shared memory feeds
// FLASH_MT products, which is what bounds mma.sync on the H100 — shared-memory reads per mma). Key /
// value tiles of 64 rows go through shared memory two stages deep (cp.async: the next tile loads while
// this one is used). S = Q·Kᵀ and O += P·V are mma.sync.m16n8k16 bf16 products with fp32 accumulators;
// the softmax is online in log2 units (scale and ALiBi slope folded into exp2), so T×T never exists.
// Q stays in registers when a warp has one m-tile, in shared memory (ldmatrix) when it has two (the
// registers go to the accumulators). Tiles wholly visible to a warp skip the mask; tiles wholly
// hidden from a warp (past its last row, on the causal diagonal) skip the work. FLASH_PIPE issues the
// next tile's scores before this tile's softmax (two score tiles in registers); FLASH_HEAD_MAJOR
// launches a head's query tiles together instead of the longest tiles of all heads first. flash.ts
// holds the shapes in use and bench/RESULTS-attention.md their timings.
//
// Fragment layouts of m16n8k16 (lane = 4·g + t): A regs {(g, 2t..), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)};
// B regs {(k 2t.., n g), (k 2t+8.., n g)}; C {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}.
#ifndef HEAD_DIM
#define HEAD_DIM 16
#endif
#ifndef FLASH_MT
#define FLASH_MT 1
#endif
#ifndef FLASH_WARPS
#define FLASH_WARPS 4
#endif
#ifndef FLASH_HEAD_MAJOR
#define FLASH_HEAD_MAJOR 0
#endif
#ifndef FLASH_PIPE
#define FLASH_PIPE 0
#endif
#ifndef FLASH_MIN_BLOCKS
#define FLASH_MIN_BLOCKS 2
#endif
#define MT FLASH_MT
#define NWARP FLASH_WARPS
#define BQ (NWARP * 16 * MT)
#ifndef FLASH_BK
#define FLASH_BK 64
#endif
#define BK FLASH_BK  // keys a tile
#define Q_IN_SMEM (MT > 1)
#define ROW (HEAD_DIM + 8)  // padded shared row (bf16): rows land 4 banks apart, so fragment loads don't conflict
#define DSTEPS (HEAD_DIM / 16)
#define DTILES (HEAD_DIM / 8)
typedef __nv_bfloat16 bf16;
#include "flash_common.cuh"

// Grid (batch·heads, ceil(tq / BQ)) or, FLASH_HEAD_MAJOR, (ceil(tq / BQ), batch·heads); NWARP·32 threads; dynamic shared memory 2 stages × (K, V) tiles
// of BK × ROW bf16, plus BQ × ROW for Q when Q_IN_SMEM. Query i sits at position kvLen − tq + i; keys
// are rows [0, kvLen) of a [batch, capacity] cache. lse may be null (prefill).
extern "C" __global__ void __launch_bounds__(NWARP * 32, FLASH_MIN_BLOCKS) flash_forward(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const int* __restrict__ mask,
    const float* __restrict__ slopes, bf16* __restrict__ out, float* __restrict__ lse,
    int tq, int capacity, int kvLen, int qStride, int kvStride, int oStride, int nHeads, float scale) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  bf16 (*tiles)[2][BK][ROW] = reinterpret_cast<bf16 (*)[2][BK][ROW]>(smemRaw);  // [stage][K or V][row][col]
#if FLASH_HEAD_MAJOR
  // Grid (query tiles, batch·heads): a head's tiles run side by side (its K/V stay in L2), longest first.
  const int qTile = gridDim.x - 1 - blockIdx.x, bh = blockIdx.y;
#else
  // Grid (batch·heads, query tiles): longest tiles first over the whole grid (y is the slowest index).
  const int qTile = gridDim.y - 1 - blockIdx.y, bh = blockIdx.x;
#endif
  const int h = bh % nHeads, b = bh / nHeads;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int q0 = qTile * BQ, wRow = q0 + warp * 16 * MT;  // the block's and this warp's first rows
  const int offset = kvLen - tq;                         // position of query 0
  const float LOG2E = 1.4426950408889634f;
  const float slope2 = slopes ? slopes[h] * LOG2E : 0.f, scale2 = scale * LOG2E;
  const bf16* qBase = q + (long long)b * tq * qStride + h * HEAD_DIM;
  const long long kvBase = (long long)b * capacity;

#if Q_IN_SMEM
  bf16 (*Qs)[ROW] = reinterpret_cast<bf16 (*)[ROW]>(smemRaw + 2 * 2 * BK * ROW * sizeof(bf16));
  for (int idx = threadIdx.x; idx < BQ * (HEAD_DIM / 8); idx += NWARP * 32) {  // committed with the first K/V tile
    const int r = idx / (HEAD_DIM / 8), c = (idx - r * (HEAD_DIM / 8)) * 8;
    const bool ok = q0 + r < tq;
    cp_async16(&Qs[r][c], qBase + (long long)(ok ? q0 + r : 0) * qStride + c, ok);
  }
#define QFRAG(m, d, a) ldsm_x4(&Qs[warp * 16 * MT + (m) * 16 + (lane & 15)][(d) * 16 + (lane >> 4) * 8], a[0], a[1], a[2], a[3], false)
#else
  unsigned qa[DSTEPS][4];  // MT = 1: this warp's 16 rows as A fragments, in registers for the whole loop
  {
    const int ra = wRow + g, rb = ra + 8;
    const bool ok0 = ra < tq, ok1 = rb < tq;
#pragma unroll
    for (int s = 0; s < DSTEPS; s++) {
      const int c = s * 16 + 2 * t4;
      qa[s][0] = ok0 ? *reinterpret_cast<const unsigned*>(qBase + (long long)ra * qStride + c) : 0u;
      qa[s][1] = ok1 ? *reinterpret_cast<const unsigned*>(qBase + (long long)rb * qStride + c) : 0u;
      qa[s][2] = ok0 ? *reinterpret_cast<const unsigned*>(qBase + (long long)ra * qStride + c + 8) : 0u;
      qa[s][3] = ok1 ? *reinterpret_cast<const unsigned*>(qBase + (long long)rb * qStride + c + 8) : 0u;
    }
  }
#define QFRAG(m, d, a) do { a[0] = qa[d][0]; a[1] = qa[d][1]; a[2] = qa[d][2]; a[3] = qa[d][3]; } while (0)
#endif

  float o[MT][DTILES][4];
  float mrow[MT][2], lrow[MT][2];  // running max (log2 units) and per-thread partial sums, rows g and g+8
#pragma unroll
  for (int m = 0; m < MT; m++) {
#pragma unroll
    for (int n = 0; n < DTILES; n++) o[m][n][0] = o[m][n][1] = o[m][n][2] = o[m][n][3] = 0.f;
    mrow[m][0] = mrow[m][1] = -INFINITY;
    lrow[m][0] = lrow[m][1] = 0.f;
  }

  const int kEnd = min(offset + min(q0 + BQ, tq), kvLen);  // keys past the block's last position are hidden
  const int warpFirst = offset + wRow;                     // this warp's first and last positions
  const int warpLast = offset + min(wRow + 16 * MT, tq) - 1;
  const bool warpLive = wRow < tq;
  auto loadK = [&](int stage, int k0) {  // a K tile (rows ≥ kvLen zero-filled), no commit
    for (int idx = threadIdx.x; idx < BK * (HEAD_DIM / 8); idx += NWARP * 32) {
      const int r = idx / (HEAD_DIM / 8), c = (idx - r * (HEAD_DIM / 8)) * 8;
      const bool ok = k0 + r < kvLen;
      cp_async16(&tiles[stage][0][r][c], k + (kvBase + (ok ? k0 + r : 0)) * kvStride + h * HEAD_DIM + c, ok);
    }
  };
  auto loadV = [&](int stage, int k0) {
    for (int idx = threadIdx.x; idx < BK * (HEAD_DIM / 8); idx += NWARP * 32) {
      const int r = idx / (HEAD_DIM / 8), c = (idx - r * (HEAD_DIM / 8)) * 8;
      const bool ok = k0 + r < kvLen;
      cp_async16(&tiles[stage][1][r][c], v + (kvBase + (ok ? k0 + r : 0)) * kvStride + h * HEAD_DIM + c, ok);
    }
  };
  auto commit = [] { asm volatile("cp.async.commit_group;\n" ::: "memory"); };
  // Whether some key of the tile at k0 is visible to some row of this warp (warp-uniform).
  auto visible = [&](int k0) { return warpLive && k0 <= warpLast; };

  auto scores = [&](float (&s)[MT][BK / 8][4], const bf16 (*Ks)[ROW]) {
    // S = Q·Kᵀ, MT·16 rows × 64 keys; one ldmatrix.x4 of K gives the B fragments of two key n-tiles.
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
      for (int n = 0; n < BK / 8; n++) s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = 0.f;
#pragma unroll
    for (int d = 0; d < DSTEPS; d++) {
      unsigned a[MT][4];
#pragma unroll
      for (int m = 0; m < MT; m++) QFRAG(m, d, a[m]);
#pragma unroll
      for (int n = 0; n < BK / 8; n += 2) {
        unsigned b0, b1, b2, b3;
        ldsm_x4(&Ks[n * 8 + (lane >> 4) * 8 + (lane & 7)][d * 16 + ((lane >> 3) & 1) * 8], b0, b1, b2, b3, false);
#pragma unroll
        for (int m = 0; m < MT; m++) {
          mma16816(s[m][n], a[m], b0, b1);
          mma16816(s[m][n + 1], a[m], b2, b3);
        }
      }
    }
  };

  // Softmax of one tile's scores (online: running max and sum) and O += P·V.
  auto consume = [&](float (&s)[MT][BK / 8][4], const bf16 (*Vs)[ROW], int k0) {
    // Scale, bias, mask (in log2 units). The ALiBi term −slope·(pos − j) is slope·(j − warpFirst) less
    // slope·(pos − warpFirst): the second part is constant along a row, so it cancels in the softmax
    // and only the lse puts it back. The first is one value per key column, shared by the thread's
    // 2·MT rows: one FFMA a score.
    const bool needMask = mask || k0 + BK - 1 > warpFirst || k0 + BK > kvLen;
    // Key columns outer, rows inner: a column's bias is live for one step only (registers go to O).
    float mx[MT][2];
#pragma unroll
    for (int m = 0; m < MT; m++) mx[m][0] = mx[m][1] = -INFINITY;
    const float base = slope2 * (float)(k0 - warpFirst + 2 * t4);
#pragma unroll
    for (int n = 0; n < BK / 8; n++) {
      const float cb0 = fmaf(slope2, (float)(n * 8), base), cb1 = fmaf(slope2, (float)(n * 8 + 1), base);
#pragma unroll
      for (int m = 0; m < MT; m++) {
        const int pos0 = warpFirst + m * 16 + g, pos1 = pos0 + 8;
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int j = k0 + n * 8 + 2 * t4 + (e & 1);
          float x = fmaf(s[m][n][e], scale2, (e & 1) ? cb1 : cb0);
          if (needMask) {
            if (j > (e < 2 ? pos0 : pos1) || j >= kvLen) x = -INFINITY;
            else if (mask && mask[kvBase + j] == 0) x = -1e30f;
          }
          s[m][n][e] = x;
          mx[m][e >> 1] = fmaxf(mx[m][e >> 1], x);
        }
      }
    }
    bool sameMax = true;
    float alpha[MT][2];
#pragma unroll
    for (int m = 0; m < MT; m++) {
      float mx0 = mx[m][0], mx1 = mx[m][1];
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1)); mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1)); mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      const float n0 = fmaxf(mrow[m][0], mx0), n1 = fmaxf(mrow[m][1], mx1);
      // A row with nothing visible yet keeps max −∞; subtract 0 then, so exp2 gives 0 and not NaN.
      const float u0 = n0 == -INFINITY ? 0.f : n0, u1 = n1 == -INFINITY ? 0.f : n1;
      const float a0 = fast_exp2(mrow[m][0] - u0), a1 = fast_exp2(mrow[m][1] - u1);
      sameMax = sameMax && n0 == mrow[m][0] && n1 == mrow[m][1];
      mrow[m][0] = n0; mrow[m][1] = n1;
      lrow[m][0] *= a0; lrow[m][1] *= a1;
      alpha[m][0] = a0; alpha[m][1] = a1;
      // P = exp2(S − max) in place (the quad's partial sums meet at the end).
#pragma unroll
      for (int n = 0; n < BK / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const float x = fast_exp2(s[m][n][e] - (e < 2 ? u0 : u1));
          s[m][n][e] = x;
          lrow[m][e >> 1] += x;
        }
      }
    }
    if (!__all_sync(0xffffffffu, sameMax)) {  // warp-uniform: some row's max moved, rescale O
#pragma unroll
      for (int m = 0; m < MT; m++)
#pragma unroll
        for (int n = 0; n < DTILES; n++) {
          o[m][n][0] *= alpha[m][0]; o[m][n][1] *= alpha[m][0]; o[m][n][2] *= alpha[m][1]; o[m][n][3] *= alpha[m][1];
        }
    }
    // O += P·V: a C tile of 16 rows × 16 keys, packed to bf16, is the A fragment of the product;
    // V is read with ldmatrix.trans (keys are the reduction dimension).
#pragma unroll
    for (int ks = 0; ks < BK / 16; ks++) {
      unsigned pa[MT][4];
#pragma unroll
      for (int m = 0; m < MT; m++) {
        pa[m][0] = pack2(s[m][2 * ks][0], s[m][2 * ks][1]);
        pa[m][1] = pack2(s[m][2 * ks][2], s[m][2 * ks][3]);
        pa[m][2] = pack2(s[m][2 * ks + 1][0], s[m][2 * ks + 1][1]);
        pa[m][3] = pack2(s[m][2 * ks + 1][2], s[m][2 * ks + 1][3]);
      }
#pragma unroll
      for (int dn = 0; dn < HEAD_DIM / 16; dn++) {
        const int mat = lane >> 3;
        unsigned v0, v1, v2, v3;
        ldsm_x4(&Vs[ks * 16 + (mat & 1) * 8 + (lane & 7)][dn * 16 + (mat >> 1) * 8], v0, v1, v2, v3, true);
#pragma unroll
        for (int m = 0; m < MT; m++) {
          mma16816(o[m][2 * dn], pa[m], v0, v1);
          mma16816(o[m][2 * dn + 1], pa[m], v2, v3);
        }
      }
    }
  };

  // Key tiles from the diagonal back to 0: a row's largest scores (ALiBi peaks on the diagonal) come
  // first, so later tiles rarely raise the running max and the rescale of O is mostly skipped.
  const int nTiles = (kEnd + BK - 1) / BK, kFirst = (nTiles - 1) * BK;
#if FLASH_PIPE
  // Software-pipelined: the scores of tile it+1 are issued before the softmax of tile it, so the tensor
  // cores have work while the warp does the softmax. K and V have separate two-stage rings: at step it,
  // K(it+1) and V(it) are in use while V(it+1) and K(it+2) load.
  float sc[MT][BK / 8][4];
  if (nTiles > 0) {
    loadK(0, kFirst); commit();
    if (nTiles > 1) loadK(1, kFirst - BK);
    loadV(0, kFirst); commit();
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    __syncthreads();
    if (visible(kFirst)) scores(sc, tiles[0][0]);
    __syncthreads();  // K stage 0 is refilled next
  }
  for (int it = 0; it < nTiles; it++) {
    const int k0 = kFirst - it * BK;
    if (it + 1 < nTiles) loadV((it + 1) & 1, k0 - BK);
    if (it + 2 < nTiles) loadK(it & 1, k0 - 2 * BK);
    commit();
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    __syncthreads();
    float sn[MT][BK / 8][4];
    const bool nextVisible = it + 1 < nTiles && visible(k0 - BK);
    if (nextVisible) scores(sn, tiles[(it + 1) & 1][0]);
    if (visible(k0)) consume(sc, tiles[it & 1][1], k0);
    if (nextVisible) {
#pragma unroll
      for (int m = 0; m < MT; m++)
#pragma unroll
        for (int n = 0; n < BK / 8; n++)
#pragma unroll
          for (int e = 0; e < 4; e++) sc[m][n][e] = sn[m][n][e];
    }
    __syncthreads();  // V(it) and K(it+1) stages are refilled next
  }
#else
  if (nTiles > 0) { loadK(0, kFirst); loadV(0, kFirst); commit(); }
  for (int it = 0; it < nTiles; it++) {
    const int k0 = kFirst - it * BK;
    if (it + 1 < nTiles) { loadK((it + 1) & 1, k0 - BK); loadV((it + 1) & 1, k0 - BK); }
    commit();
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    __syncthreads();
    if (visible(k0)) {
      float s[MT][BK / 8][4];
      scores(s, tiles[it & 1][0]);
      consume(s, tiles[it & 1][1], k0);
    }
    __syncthreads();  // this stage is refilled by the next iteration's prefetch
  }
#endif
  bf16* oBase = out + (long long)b * tq * oStride + h * HEAD_DIM;
  const float LN2 = 0.6931471805599453f;
#pragma unroll
  for (int m = 0; m < MT; m++) {
    float l0 = lrow[m][0], l1 = lrow[m][1];
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1); l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1); l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
    const int r0 = wRow + m * 16 + g, r1 = r0 + 8;
#pragma unroll
    for (int n = 0; n < DTILES; n++) {
      const int c = n * 8 + 2 * t4;
      if (r0 < tq) *reinterpret_cast<__nv_bfloat162*>(oBase + (long long)r0 * oStride + c) = __floats2bfloat162_rn(o[m][n][0] * inv0, o[m][n][1] * inv0);
      if (r1 < tq) *reinterpret_cast<__nv_bfloat162*>(oBase + (long long)r1 * oStride + c) = __floats2bfloat162_rn(o[m][n][2] * inv1, o[m][n][3] * inv1);
    }
    // lse in natural-log units: (max + log2 Σ) · ln 2, from the exact log2 (not the approximate ex2).
    if (lse && t4 == 0) {
      float* lr = lse + ((long long)b * nHeads + h) * tq;
      const float shift0 = slope2 * (float)(m * 16 + g), shift1 = slope2 * (float)(m * 16 + g + 8);  // slope·(pos − warpFirst)
      if (r0 < tq) lr[r0] = l0 > 0.f ? (mrow[m][0] - shift0 + log2f(l0)) * LN2 : -INFINITY;
      if (r1 < tq) lr[r1] = l1 > 0.f ? (mrow[m][1] - shift1 + log2f(l1)) * LN2 : -INFINITY;
    }
  }
}
#undef QFRAG

// Scalar attention forward: one warp a query (4 a block). Scores of 32 keys at a time (a lane a key),
// online softmax, then each lane adds the 32 weighted value rows for its dimensions (lane + 32·e).
#define MAXE 8  // head sizes up to 256
extern "C" __global__ void attention_forward_scalar(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const int* __restrict__ mask, const float* __restrict__ slopes, T* __restrict__ out, float* __restrict__ lse,
    int t, int nHeads, int dHead, float scale) {
  __shared__ float qs[4][256];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i = blockIdx.x * 4 + warp, h = blockIdx.y, b = blockIdx.z;
  if (i >= t) return;
  const int d = nHeads * dHead;
  const long long rowBase = (long long)b * t * d + h * dHead;
  for (int c = lane; c < dHead; c += 32) qs[warp][c] = ld(q[rowBase + (long long)i * d + c]);
  __syncwarp();
  const float slope = slopes ? slopes[h] : 0.f;
  float acc[MAXE];
#pragma unroll
  for (int e = 0; e < MAXE; e++) acc[e] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int j0 = 0; j0 <= i; j0 += 32) {
    const int j = j0 + lane;
    float s = -INFINITY;
    if (j <= i && (!mask || mask[(long long)b * t + j] != 0)) {
      const T* kr = k + rowBase + (long long)j * d;
      float dot = 0.f;
      for (int c = 0; c < dHead; c++) dot = fmaf(qs[warp][c], ld(kr[c]), dot);
      s = dot * scale - (float)(i - j) * slope;
    }
    const float mNew = fmaxf(m, warp_max(s));
    if (mNew == -INFINITY) continue;
    const float alpha = m == -INFINITY ? 0.f : expf(m - mNew);
    const float p = s == -INFINITY ? 0.f : expf(s - mNew);
    l = l * alpha + warp_sum(p);
#pragma unroll
    for (int e = 0; e < MAXE; e++) acc[e] *= alpha;
    for (int jj = 0; jj < 32; jj++) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      if (pj == 0.f) continue;
      const T* vr = v + rowBase + (long long)(j0 + jj) * d;
#pragma unroll
      for (int e = 0; e < MAXE; e++) { const int c = lane + 32 * e; if (c < dHead) acc[e] = fmaf(pj, ld(vr[c]), acc[e]); }
    }
    m = mNew;
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
  for (int e = 0; e < MAXE; e++) { const int c = lane + 32 * e; if (c < dHead) out[rowBase + (long long)i * d + c] = st<T>(acc[e] * inv); }
  if (lane == 0) lse[((long long)b * nHeads + h) * t + i] = l > 0.f ? m + logf(l) : -INFINITY;
}

// D[b, h, i] = dOut_i · out_i over the head's dimensions (float32), the backward pass's row term.
// rows are [batch·t], heads contiguous within a row. attention_row_dot8 (flash.ts launchRowDot picks it
// where dHead / 8 is a power of two ≤ 32): `lanes` = dHead / 8 lanes a (row, head), 8 values a lane
// through 16-byte loads (bf16), one shuffle tree; the scalar kernel below (one warp a (row, head), a
// value a lane a pass) is the fallback for other head sizes, and reads 2 bytes a lane a load.
extern "C" __global__ void attention_row_dot8(const T* __restrict__ dOut, const T* __restrict__ out, float* __restrict__ D,
                                              int batch, int t, int nHeads, int dHead, int lanes) {
  const long long id = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  const long long pair = id / lanes;  // (row, head) = row·nHeads + h, which starts at pair·dHead
  const int part = (int)(id - pair * lanes);
  const bool live = pair < (long long)batch * t * nHeads;
  float s = 0.f;
  if (live) {
    float g[8], o[8];
    load8(dOut + pair * dHead + part * 8, g);
    load8(out + pair * dHead + part * 8, o);
#pragma unroll
    for (int j = 0; j < 8; j++) s = fmaf(g[j], o[j], s);
  }
  // every lane takes part (dead ones with 0): lanes divides 32, so each xor stays inside its group
  for (int off = lanes >> 1; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (live && part == 0) {
    const long long row = pair / nHeads;
    const int h = (int)(pair - row * nHeads), b = (int)(row / t), i = (int)(row - (long long)b * t);
    D[((long long)b * nHeads + h) * t + i] = s;
  }
}

extern "C" __global__ void attention_row_dot(const T* __restrict__ dOut, const T* __restrict__ out, float* __restrict__ D,
                                             int batch, int t, int nHeads, int dHead) {
  const long long w = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= (long long)batch * t * nHeads) return;
  const long long row = w / nHeads;
  const int h = (int)(w - row * nHeads);
  const long long off = row * nHeads * dHead + (long long)h * dHead;
  float s = 0.f;
  for (int c = lane; c < dHead; c += 32) s = fmaf(ld(dOut[off + c]), ld(out[off + c]), s);
  s = warp_sum(s);
  const int b = (int)(row / t), i = (int)(row - (long long)b * t);
  if (lane == 0) D[((long long)b * nHeads + h) * t + i] = s;
}
