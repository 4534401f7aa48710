// Attention backward, flash-attention style: the probabilities are rebuilt from q, k and the forward's
// log-sum-exp (nothing t×t is kept), ALiBi and the causal mask inside the kernels.
//   p_ij = exp(scale·q_i·k_j − (i − j)·slope − lse_i),  D_i = dO_i·o_i (attention_row_dot)
//   dv_j = Σ_i p_ij dO_i,  ds_ij = p_ij (dO_i·v_j − D_i),  dq_i = scale Σ_j ds_ij k_j,  dk_j = scale Σ_i ds_ij q_i
// Two kernels, neither with atomics (as Triton's fused-attention tutorial splits it): one owns 64 keys
// and walks the queries at or after them (dk, dv), the other owns 64 queries and walks the keys at or
// before them (dq); each recomputes the scores it needs.
//
// Tensor-core versions (bf16, HEAD_DIM a multiple of 16): 4 warps, a warp owns 16 rows of its block's
// 64; mma.sync m16n8k16 with fp32 accumulators. Fragment layouts (lane = 4·g + t): A {(g, 2t..),
// (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}, B {(k 2t.., n g), (k 2t+8.., n g)}, C {(g, 2t), (g, 2t+1),
// (g+8, 2t), (g+8, 2t+1)}. A C tile of 16 rows × 16 columns (two n-tiles) is, packed to bf16, the A
// fragment of the next product: that is how P and dS feed dV, dK and dQ. Tiles whose rows are the
// reduction dimension are read with ldmatrix.trans.
#define BT 64
#define NWARP 4
#ifndef HEAD_DIM
#define HEAD_DIM 16
#endif
#define ROW (HEAD_DIM + 8)
#define DSTEPS (HEAD_DIM / 16)
#define DTILES (HEAD_DIM / 8)
typedef __nv_bfloat16 bf16;

__device__ __forceinline__ void mma16816(float* c, const unsigned* a, unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(d), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void ldsm_x4(const void* p, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, bool trans) {
  const unsigned addr = (unsigned)__cvta_generic_to_shared(p);
  if (trans) asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr) : "memory");
  else asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr) : "memory");
}
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<unsigned*>(&v);
}
// c[2][4] += A(16 rows × 16 of the reduction) · B where B's rows [n0, n0+16) of a [n][k] shared tile
// are the two n-tiles (k = the head dimension): acc over all DSTEPS of the head.
__device__ __forceinline__ void rows_times_tile(float (*c)[4], const unsigned (*a)[4], const bf16 (*tile)[ROW], int n0, int lane) {
#pragma unroll
  for (int hh = 0; hh < 2; hh++) {
    c[hh][0] = c[hh][1] = c[hh][2] = c[hh][3] = 0.f;
#pragma unroll
    for (int d = 0; d < DSTEPS; d += 2) {
      unsigned b0, b1, b2, b3;
      if (d + 1 < DSTEPS) {
        ldsm_x4(&tile[n0 + hh * 8 + (lane & 7)][d * 16 + (lane >> 3) * 8], b0, b1, b2, b3, false);
        mma16816(c[hh], a[d], b0, b1);
        mma16816(c[hh], a[d + 1], b2, b3);
      } else {
        const int g = lane >> 2, t4 = lane & 3;
        b0 = *reinterpret_cast<const unsigned*>(&tile[n0 + hh * 8 + g][d * 16 + 2 * t4]);
        b1 = *reinterpret_cast<const unsigned*>(&tile[n0 + hh * 8 + g][d * 16 + 2 * t4 + 8]);
        mma16816(c[hh], a[d], b0, b1);
      }
    }
  }
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
// Two tiles of 64 rows × HEAD_DIM into shared memory (cp.async, zero-filled past t), one commit group.
__device__ __forceinline__ void load_pair(bf16 (*x)[ROW], bf16 (*y)[ROW], const bf16* xg, const bf16* yg, int r0, int t, int stride) {
  for (int idx = threadIdx.x; idx < BT * (HEAD_DIM / 8); idx += NWARP * 32) {
    const int r = idx / (HEAD_DIM / 8), c = (idx - r * (HEAD_DIM / 8)) * 8;
    const bool ok = r0 + r < t;
    const long long off = (long long)(ok ? r0 + r : 0) * stride + c;
    cp_async16(&x[r][c], xg + off, ok);
    cp_async16(&y[r][c], yg + off, ok);
  }
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// dq for 64 queries a block: grid (ceil(t/64), nHeads, batch), 128 threads, shared 2 stages × (K, V).
extern "C" __global__ void __launch_bounds__(NWARP * 32, 2) flash_backward_dq(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const bf16* __restrict__ dOut,
    const float* __restrict__ lse, const float* __restrict__ D, const float* __restrict__ slopes, bf16* __restrict__ dq,
    int t, int nHeads, float scale) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  bf16 (*tiles)[2][BT][ROW] = reinterpret_cast<bf16 (*)[2][BT][ROW]>(smemRaw);
  const int qTile = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, stride = nHeads * HEAD_DIM;
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
  const float L0 = r0 < t ? lrow[r0] * LOG2E : INFINITY, L1 = r1 < t ? lrow[r1] * LOG2E : INFINITY;
  const float D0 = r0 < t ? drow[r0] : 0.f, D1 = r1 < t ? drow[r1] : 0.f;
  float acc[DTILES][4];
#pragma unroll
  for (int n = 0; n < DTILES; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

  const int kEnd = min(q0 + BT, t);
  load_pair(tiles[0][0], tiles[0][1], k + base, v + base, 0, t, stride);
  for (int k0 = 0, it = 0; k0 < kEnd; k0 += BT, it++) {
    if (k0 + BT < kEnd) load_pair(tiles[(it + 1) & 1][0], tiles[(it + 1) & 1][1], k + base, v + base, k0 + BT, t, stride);
    else asm volatile("cp.async.commit_group;\n" ::: "memory");
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    __syncthreads();
    const bf16 (*Ks)[ROW] = tiles[it & 1][0];
    const bf16 (*Vs)[ROW] = tiles[it & 1][1];
    const bool needMask = k0 + BT - 1 > rw || k0 + BT > t;
#pragma unroll 1
    for (int ks = 0; ks < BT / 16; ks++) {  // not unrolled: the registers go to the accumulators
      float s[2][4], dp[2][4];
      rows_times_tile(s, qa, Ks, ks * 16, lane);
      rows_times_tile(dp, da, Vs, ks * 16, lane);
      float ds[2][4];
#pragma unroll
      for (int hh = 0; hh < 2; hh++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int j = k0 + ks * 16 + hh * 8 + 2 * t4 + (e & 1), i = e < 2 ? r0 : r1;
          float p = fast_exp2(fmaf(s[hh][e], scale2, slope2 * (float)(j - i)) - (e < 2 ? L0 : L1));
          if (needMask && (j > i || j >= t)) p = 0.f;
          ds[hh][e] = p * (dp[hh][e] - (e < 2 ? D0 : D1));
        }
      }
      const unsigned pa[4] = {pack2(ds[0][0], ds[0][1]), pack2(ds[0][2], ds[0][3]), pack2(ds[1][0], ds[1][1]), pack2(ds[1][2], ds[1][3])};
      p_times_tile(acc, pa, Ks, ks * 16, lane);
    }
    __syncthreads();
  }
#pragma unroll
  for (int n = 0; n < DTILES; n++) {
    const int c = n * 8 + 2 * t4;
    if (r0 < t) *reinterpret_cast<__nv_bfloat162*>(dq + base + (long long)r0 * stride + c) = __floats2bfloat162_rn(acc[n][0] * scale, acc[n][1] * scale);
    if (r1 < t) *reinterpret_cast<__nv_bfloat162*>(dq + base + (long long)r1 * stride + c) = __floats2bfloat162_rn(acc[n][2] * scale, acc[n][3] * scale);
  }
}

// dk and dv for 64 keys a block: grid (ceil(t/64), nHeads, batch), 128 threads. Shared: this block's K
// and V rows (read as A fragments with ldmatrix), 2 stages × (Q, dO) tiles, and each stage's lse and D.
extern "C" __global__ void __launch_bounds__(NWARP * 32, 2) flash_backward_dkdv(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const bf16* __restrict__ dOut,
    const float* __restrict__ lse, const float* __restrict__ D, const float* __restrict__ slopes,
    bf16* __restrict__ dk, bf16* __restrict__ dv, int t, int nHeads, float scale) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  bf16 (*own)[BT][ROW] = reinterpret_cast<bf16 (*)[BT][ROW]>(smemRaw);                          // [K or V][row][col]
  bf16 (*tiles)[2][BT][ROW] = reinterpret_cast<bf16 (*)[2][BT][ROW]>(smemRaw + 2 * BT * ROW * 2);  // [stage][Q or dO]
  float (*rowTerms)[2][BT] = reinterpret_cast<float (*)[2][BT]>(smemRaw + 6 * BT * ROW * 2);      // [stage][lse·log2e or D]
  const int kTile = blockIdx.x;  // diagonal-first order does not matter here: every key tile walks to t
  const int h = blockIdx.y, b = blockIdx.z, stride = nHeads * HEAD_DIM;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const float LOG2E = 1.4426950408889634f;
  const float slope2 = slopes ? slopes[h] * LOG2E : 0.f, scale2 = scale * LOG2E;
  const long long base = (long long)b * t * stride + h * HEAD_DIM;
  const float* lrow = lse + ((long long)b * nHeads + h) * t;
  const float* drow = D + ((long long)b * nHeads + h) * t;
  const int k0 = kTile * BT, kw = k0 + warp * 16, j0 = kw + g, j1 = j0 + 8;

  auto loadStage = [&](int stage, int q0) {
    load_pair(tiles[stage][0], tiles[stage][1], q + base, dOut + base, q0, t, stride);
    for (int r = threadIdx.x; r < BT; r += NWARP * 32) {
      const bool ok = q0 + r < t;
      rowTerms[stage][0][r] = ok ? lrow[q0 + r] * LOG2E : INFINITY;  // exp2(x − ∞) = 0: rows past t add nothing
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
    // This warp's K and V rows as A fragments, from shared memory (registers go to the accumulators).
    unsigned ka[DSTEPS][4], va[DSTEPS][4];
#pragma unroll
    for (int d = 0; d < DSTEPS; d++) {
      ldsm_x4(&own[0][warp * 16 + (lane & 15)][d * 16 + (lane >> 4) * 8], ka[d][0], ka[d][1], ka[d][2], ka[d][3], false);
      ldsm_x4(&own[1][warp * 16 + (lane & 15)][d * 16 + (lane >> 4) * 8], va[d][0], va[d][1], va[d][2], va[d][3], false);
    }
    const bool needMask = q0 < kw + 15 || q0 + BT > t;
#pragma unroll 1
    for (int ks = 0; ks < BT / 16; ks++) {
      float st[2][4], dpt[2][4];  // transposed: rows = keys, columns = queries
      rows_times_tile(st, ka, Qs, ks * 16, lane);
      rows_times_tile(dpt, va, Ds, ks * 16, lane);
      float p[2][4], ds[2][4];
#pragma unroll
      for (int hh = 0; hh < 2; hh++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int col = ks * 16 + hh * 8 + 2 * t4 + (e & 1), i = q0 + col, j = e < 2 ? j0 : j1;
          float x = fast_exp2(fmaf(st[hh][e], scale2, slope2 * (float)(j - i)) - Ls[col]);
          if (needMask && (j > i || i >= t)) x = 0.f;
          p[hh][e] = x;
          ds[hh][e] = x * (dpt[hh][e] - Dr[col]);
        }
      }
      const unsigned pa[4] = {pack2(p[0][0], p[0][1]), pack2(p[0][2], p[0][3]), pack2(p[1][0], p[1][1]), pack2(p[1][2], p[1][3])};
      const unsigned sa[4] = {pack2(ds[0][0], ds[0][1]), pack2(ds[0][2], ds[0][3]), pack2(ds[1][0], ds[1][1]), pack2(ds[1][2], ds[1][3])};
      p_times_tile(dvAcc, pa, Ds, ks * 16, lane);
      p_times_tile(dkAcc, sa, Qs, ks * 16, lane);
    }
    __syncthreads();
  }
#pragma unroll
  for (int n = 0; n < DTILES; n++) {
    const int c = n * 8 + 2 * t4;
    if (j0 < t) {
      *reinterpret_cast<__nv_bfloat162*>(dk + base + (long long)j0 * stride + c) = __floats2bfloat162_rn(dkAcc[n][0] * scale, dkAcc[n][1] * scale);
      *reinterpret_cast<__nv_bfloat162*>(dv + base + (long long)j0 * stride + c) = __floats2bfloat162_rn(dvAcc[n][0], dvAcc[n][1]);
    }
    if (j1 < t) {
      *reinterpret_cast<__nv_bfloat162*>(dk + base + (long long)j1 * stride + c) = __floats2bfloat162_rn(dkAcc[n][2] * scale, dkAcc[n][3] * scale);
      *reinterpret_cast<__nv_bfloat162*>(dv + base + (long long)j1 * stride + c) = __floats2bfloat162_rn(dvAcc[n][2], dvAcc[n][3]);
    }
  }
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
    if (c < dHead) { dk[rowBase + (long long)j * d + c] = st<T>(dkAcc[e] * scale); dv[rowBase + (long long)j * d + c] = st<T>(dvAcc[e]); }
  }
}
