// Causal flash attention for prefill on the tensor cores (bf16 only; HEAD_DIM a multiple of 16).
// Grid (query tiles, heads, batch), 4 warps a block; each warp owns 16 query rows of the block's 64.
// Key/value tiles of 64 rows go through shared memory, two stages deep (cp.async: the next tile
// loads while this one is used); S = Q·Kᵀ and O += P·V are
// mma.sync.m16n8k16 bf16 products with fp32 accumulators; the softmax is online (running max and
// sum per row), so the T×T scores never exist. ALiBi is added in the kernel from the positions,
// and masked (left-padding) keys get -1e30 as in attention_decode.
//
// Fragment layouts of m16n8k16 (lane = 4·g + t): A regs {(g, 2t..), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)};
// B regs {(k 2t.., n g), (k 2t+8.., n g)}; C {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}.
#define BQ 64
#ifndef FLASH_MIN_BLOCKS
#define FLASH_MIN_BLOCKS 3
#endif
#define BK 64
#define NWARP 4
#define ROW (HEAD_DIM + 8)  // padded shared row (bf16): rows land 4 banks apart, so fragment loads don't conflict
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
__device__ __forceinline__ void ldsm_x4(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, bool trans) {
  if (trans) asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr) : "memory");
  else asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr) : "memory");
}
// 2^x on the special-function unit (exp2f adds range handling the softmax never needs).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<unsigned*>(&v);
}

extern "C" __global__ void __launch_bounds__(NWARP * 32, FLASH_MIN_BLOCKS) flash_attention(  // 3 blocks an SM: ≤ 170 registers
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const int* __restrict__ mask,
    const float* __restrict__ slopes, bf16* __restrict__ out,
    int tq, int capacity, int kvLen, int qStride, int kvStride, int oStride, float scale) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  bf16 (*tiles)[2][BK][ROW] = reinterpret_cast<bf16 (*)[2][BK][ROW]>(smemRaw);  // [stage][K or V][row][col]
  const int qTile = gridDim.x - 1 - blockIdx.x;  // the longest (last) tiles start first
  const int h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int q0 = qTile * BQ;
  const int offset = kvLen - tq;  // position of query 0
  const float LOG2E = 1.4426950408889634f;
  const float slope2 = slopes ? slopes[h] * LOG2E : 0.f, scale2 = scale * LOG2E;

  // This warp's rows and their Q fragments (registers for the whole loop).
  const int r0 = q0 + warp * 16 + g, r1 = r0 + 8;
  unsigned qa[DSTEPS][4];
  {
    const bf16* base = q + (long long)b * tq * qStride + h * HEAD_DIM;
    const bool ok0 = r0 < tq, ok1 = r1 < tq;
#pragma unroll
    for (int s = 0; s < DSTEPS; s++) {
      const int c = s * 16 + 2 * t4;
      qa[s][0] = ok0 ? *reinterpret_cast<const unsigned*>(base + (long long)r0 * qStride + c) : 0u;
      qa[s][1] = ok1 ? *reinterpret_cast<const unsigned*>(base + (long long)r1 * qStride + c) : 0u;
      qa[s][2] = ok0 ? *reinterpret_cast<const unsigned*>(base + (long long)r0 * qStride + c + 8) : 0u;
      qa[s][3] = ok1 ? *reinterpret_cast<const unsigned*>(base + (long long)r1 * qStride + c + 8) : 0u;
    }
  }
  const int pos0 = offset + r0, pos1 = offset + r1;

  float o[DTILES][4];
#pragma unroll
  for (int n = 0; n < DTILES; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

  const int lastPos = offset + min(q0 + BQ, tq) - 1;
  const int kEnd = min(lastPos + 1, kvLen);
  const long long kvBase = (long long)b * capacity;
  const int firstPos = offset + q0 + warp * 16;  // this warp's first query position
  auto loadTile = [&](int stage, int k0) {
    for (int idx = threadIdx.x; idx < BK * (HEAD_DIM / 8); idx += NWARP * 32) {
      const int r = idx / (HEAD_DIM / 8), c = (idx - r * (HEAD_DIM / 8)) * 8;
      const bool ok = k0 + r < kvLen;
      const long long off = (kvBase + (ok ? k0 + r : 0)) * kvStride + h * HEAD_DIM + c;
      cp_async16(&tiles[stage][0][r][c], k + off, ok);
      cp_async16(&tiles[stage][1][r][c], v + off, ok);
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  };
  if (kEnd > 0) loadTile(0, 0);
  for (int k0 = 0, it = 0; k0 < kEnd; k0 += BK, it++) {
    if (k0 + BK < kEnd) loadTile((it + 1) & 1, k0 + BK);
    else asm volatile("cp.async.commit_group;\n" ::: "memory");
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    __syncthreads();
    bf16 (*Ks)[ROW] = tiles[it & 1][0];
    bf16 (*Vs)[ROW] = tiles[it & 1][1];

    // S = Q·Kᵀ for 16 rows × 64 keys; one ldmatrix.x4 gives the B fragments of two k-steps.
    float s[BK / 8][4];
#pragma unroll
    for (int n = 0; n < BK / 8; n++) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
      for (int d = 0; d < DSTEPS; d += 2) {
        unsigned b0, b1, b2, b3;
        if (d + 1 < DSTEPS) {
          ldsm_x4((unsigned)__cvta_generic_to_shared(&Ks[n * 8 + (lane & 7)][d * 16 + (lane >> 3) * 8]), b0, b1, b2, b3, false);
          mma16816(s[n], qa[d], b0, b1);
          mma16816(s[n], qa[d + 1], b2, b3);
        } else {
          b0 = *reinterpret_cast<const unsigned*>(&Ks[n * 8 + g][d * 16 + 2 * t4]);
          b1 = *reinterpret_cast<const unsigned*>(&Ks[n * 8 + g][d * 16 + 2 * t4 + 8]);
          mma16816(s[n], qa[d], b0, b1);
        }
      }
    }
    // Tiles wholly inside every row's causal window, before kvLen and without padding skip the mask.
    const bool needMask = mask || k0 + BK - 1 > firstPos || k0 + BK > kvLen;
    // Scale, bias, mask (in log2 units) and the rows' new maxima.
    float mx0 = -INFINITY, mx1 = -INFINITY;
    // The ALiBi term -slope·(pos - j) = slope·(k0 + 2·t4 - pos) + slope·(8n + (e & 1)): one base per row
    // and tile, and a compile-time multiple of the slope per element (no integer-to-float conversions).
    const float base0 = slope2 * (float)(k0 + 2 * t4 - pos0), base1 = slope2 * (float)(k0 + 2 * t4 - pos1);
#pragma unroll
    for (int n = 0; n < BK / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int j = k0 + n * 8 + 2 * t4 + (e & 1);
        const int pos = e < 2 ? pos0 : pos1;
        float x = fmaf(slope2, (float)(n * 8 + (e & 1)), fmaf(s[n][e], scale2, e < 2 ? base0 : base1));
        if (needMask) {
          if (j > pos || j >= kvLen) x = -INFINITY;
          else if (mask && mask[kvBase + j] == 0) x = -1e30f;
        }
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

    // P = exp2(S - m), summed per thread (the quad's partial sums meet at the end), then O += P·V.
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
        const int row = ks * 16 + (mat & 1) * 8 + (lane & 7), col = dn * 16 + (mat >> 1) * 8;
        unsigned v0, v1, v2, v3;
        ldsm_x4((unsigned)__cvta_generic_to_shared(&Vs[row][col]), v0, v1, v2, v3, true);
        mma16816(o[2 * dn], pa, v0, v1);
        mma16816(o[2 * dn + 1], pa, v2, v3);
      }
    }
    __syncthreads();  // this stage is refilled by the next iteration's prefetch
  }
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1); l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1); l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
  bf16* obase = out + (long long)b * tq * oStride + h * HEAD_DIM;
#pragma unroll
  for (int n = 0; n < DTILES; n++) {
    const int c = n * 8 + 2 * t4;
    if (r0 < tq) *reinterpret_cast<__nv_bfloat162*>(obase + (long long)r0 * oStride + c) = __floats2bfloat162_rn(o[n][0] * inv0, o[n][1] * inv0);
    if (r1 < tq) *reinterpret_cast<__nv_bfloat162*>(obase + (long long)r1 * oStride + c) = __floats2bfloat162_rn(o[n][2] * inv1, o[n][3] * inv1);
  }
}
