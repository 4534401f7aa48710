// Attention for training (queries = keys = t positions, causal, ALiBi in the kernel): the output and,
// per (batch, head, query), the natural log-sum-exp of the scaled, biased scores, which is all the
// backward pass (flash_backward.cu) needs to rebuild the probabilities.
//
// flash_forward_lse: tensor cores, bf16, HEAD_DIM a multiple of 16 — the prefill kernel of
// flash_attention.cu (see there: 64-query tiles, a warp per 16 rows, two-stage cp.async K/V tiles,
// mma.sync m16n8k16, online softmax in log2 units) plus the lse output.
// attention_forward_scalar: any T and head size ≤ 256, one warp a query (the float32 path and the
// check of the fast one); masked keys are left out as the CPU reference leaves them out.
#define BQ 64
#define BK 64
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

extern "C" __global__ void __launch_bounds__(NWARP * 32, 2) flash_forward_lse(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const float* __restrict__ slopes,
    bf16* __restrict__ out, float* __restrict__ lse, int t, int nHeads, float scale) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  bf16 (*tiles)[2][BK][ROW] = reinterpret_cast<bf16 (*)[2][BK][ROW]>(smemRaw);  // [stage][K or V][row][col]
  const int qTile = gridDim.x - 1 - blockIdx.x;  // the longest (last) tiles start first
  const int h = blockIdx.y, b = blockIdx.z;
  const int stride = nHeads * HEAD_DIM;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int q0 = qTile * BQ;
  const float LOG2E = 1.4426950408889634f;
  const float slope2 = slopes ? slopes[h] * LOG2E : 0.f, scale2 = scale * LOG2E;
  const long long base = (long long)b * t * stride + h * HEAD_DIM;

  const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;
  unsigned qa[DSTEPS][4];
  {
    const bool ok0 = r0 < t, ok1 = r1 < t;
#pragma unroll
    for (int s = 0; s < DSTEPS; s++) {
      const int c = s * 16 + 2 * t4;
      qa[s][0] = ok0 ? *reinterpret_cast<const unsigned*>(q + base + (long long)r0 * stride + c) : 0u;
      qa[s][1] = ok1 ? *reinterpret_cast<const unsigned*>(q + base + (long long)r1 * stride + c) : 0u;
      qa[s][2] = ok0 ? *reinterpret_cast<const unsigned*>(q + base + (long long)r0 * stride + c + 8) : 0u;
      qa[s][3] = ok1 ? *reinterpret_cast<const unsigned*>(q + base + (long long)r1 * stride + c + 8) : 0u;
    }
  }
  float o[DTILES][4];
#pragma unroll
  for (int n = 0; n < DTILES; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

  const int kEnd = min(q0 + BQ, t);
  const int firstRow = q0 + warp * 16;
  auto loadTile = [&](int stage, int k0) {
    for (int idx = threadIdx.x; idx < BK * (HEAD_DIM / 8); idx += NWARP * 32) {
      const int r = idx / (HEAD_DIM / 8), c = (idx - r * (HEAD_DIM / 8)) * 8;
      const bool ok = k0 + r < t;
      const long long off = base + (long long)(ok ? k0 + r : 0) * stride + c;
      cp_async16(&tiles[stage][0][r][c], k + off, ok);
      cp_async16(&tiles[stage][1][r][c], v + off, ok);
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  };
  loadTile(0, 0);
  for (int k0 = 0, it = 0; k0 < kEnd; k0 += BK, it++) {
    if (k0 + BK < kEnd) loadTile((it + 1) & 1, k0 + BK);
    else asm volatile("cp.async.commit_group;\n" ::: "memory");
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    __syncthreads();
    bf16 (*Ks)[ROW] = tiles[it & 1][0];
    bf16 (*Vs)[ROW] = tiles[it & 1][1];
    float s[BK / 8][4];
#pragma unroll
    for (int n = 0; n < BK / 8; n++) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
      for (int d = 0; d < DSTEPS; d += 2) {
        unsigned b0, b1, b2, b3;
        if (d + 1 < DSTEPS) {
          ldsm_x4(&Ks[n * 8 + (lane & 7)][d * 16 + (lane >> 3) * 8], b0, b1, b2, b3, false);
          mma16816(s[n], qa[d], b0, b1);
          mma16816(s[n], qa[d + 1], b2, b3);
        } else {
          b0 = *reinterpret_cast<const unsigned*>(&Ks[n * 8 + g][d * 16 + 2 * t4]);
          b1 = *reinterpret_cast<const unsigned*>(&Ks[n * 8 + g][d * 16 + 2 * t4 + 8]);
          mma16816(s[n], qa[d], b0, b1);
        }
      }
    }
    const bool needMask = k0 + BK - 1 > firstRow || k0 + BK > t;
    float mx0 = -INFINITY, mx1 = -INFINITY;
    const float base0 = slope2 * (float)(k0 + 2 * t4 - r0), base1 = slope2 * (float)(k0 + 2 * t4 - r1);
#pragma unroll
    for (int n = 0; n < BK / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int j = k0 + n * 8 + 2 * t4 + (e & 1);
        float x = fmaf(slope2, (float)(n * 8 + (e & 1)), fmaf(s[n][e], scale2, e < 2 ? base0 : base1));
        if (needMask && (j > (e < 2 ? r0 : r1) || j >= t)) x = -INFINITY;
        s[n][e] = x;
        if (e < 2) mx0 = fmaxf(mx0, x); else mx1 = fmaxf(mx1, x);
      }
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1)); mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1)); mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    const float u0 = n0 == -INFINITY ? 0.f : n0, u1 = n1 == -INFINITY ? 0.f : n1;
    const float a0 = fast_exp2(m0 - u0), a1 = fast_exp2(m1 - u1);
    m0 = n0; m1 = n1;
    l0 *= a0; l1 *= a1;
#pragma unroll
    for (int n = 0; n < DTILES; n++) { o[n][0] *= a0; o[n][1] *= a0; o[n][2] *= a1; o[n][3] *= a1; }
#pragma unroll
    for (int ks = 0; ks < BK / 16; ks++) {
      float p[2][4];
#pragma unroll
      for (int hh = 0; hh < 2; hh++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const float x = fast_exp2(s[2 * ks + hh][e] - (e < 2 ? u0 : u1));
          p[hh][e] = x;
          if (e < 2) l0 += x; else l1 += x;
        }
      }
      unsigned pa[4] = {pack2(p[0][0], p[0][1]), pack2(p[0][2], p[0][3]), pack2(p[1][0], p[1][1]), pack2(p[1][2], p[1][3])};
#pragma unroll
      for (int dn = 0; dn < HEAD_DIM / 16; dn++) {
        const int mat = lane >> 3;
        unsigned v0, v1, v2, v3;
        ldsm_x4(&Vs[ks * 16 + (mat & 1) * 8 + (lane & 7)][dn * 16 + (mat >> 1) * 8], v0, v1, v2, v3, true);
        mma16816(o[2 * dn], pa, v0, v1);
        mma16816(o[2 * dn + 1], pa, v2, v3);
      }
    }
    __syncthreads();
  }
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1); l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1); l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
#pragma unroll
  for (int n = 0; n < DTILES; n++) {
    const int c = n * 8 + 2 * t4;
    if (r0 < t) *reinterpret_cast<__nv_bfloat162*>(out + base + (long long)r0 * stride + c) = __floats2bfloat162_rn(o[n][0] * inv0, o[n][1] * inv0);
    if (r1 < t) *reinterpret_cast<__nv_bfloat162*>(out + base + (long long)r1 * stride + c) = __floats2bfloat162_rn(o[n][2] * inv1, o[n][3] * inv1);
  }
  // lse in natural-log units: (max + log2 Σ) · ln 2, from the exact log2 (not the approximate ex2).
  if (t4 == 0) {
    const float LN2 = 0.6931471805599453f;
    float* lrow = lse + ((long long)b * nHeads + h) * t;
    if (r0 < t) lrow[r0] = l0 > 0.f ? (m0 + log2f(l0)) * LN2 : -INFINITY;
    if (r1 < t) lrow[r1] = l1 > 0.f ? (m1 + log2f(l1)) * LN2 : -INFINITY;
  }
}

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
// One warp a (row, head); rows are [batch·t], heads contiguous within a row.
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
