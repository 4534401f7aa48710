// Causal flash attention for prefill on the tensor cores (bf16 only; HEAD_DIM a multiple of 16).
// Grid (query tiles, heads, batch), 4 warps a block; each warp owns 16 query rows of the block's 64.
// Key/value tiles of 64 rows go through shared memory; S = Q·Kᵀ and O += P·V are
// mma.sync.m16n8k16 bf16 products with fp32 accumulators; the softmax is online (running max and
// sum per row), so the T×T scores never exist. ALiBi is added in the kernel from the positions,
// and masked (left-padding) keys get -1e30 as in attention_decode.
//
// Fragment layouts of m16n8k16 (lane = 4·g + t): A regs {(g, 2t..), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)};
// B regs {(k 2t.., n g), (k 2t+8.., n g)}; C {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}.
#define BQ 64
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
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<unsigned*>(&v);
}

extern "C" __global__ void __launch_bounds__(NWARP * 32) flash_attention(
    const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v, const int* __restrict__ mask,
    const float* __restrict__ slopes, bf16* __restrict__ out,
    int tq, int capacity, int kvLen, int qStride, int kvStride, int oStride, float scale) {
  __shared__ __align__(16) bf16 Ks[BK][ROW];
  __shared__ __align__(16) bf16 Vs[BK][ROW];
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
  for (int k0 = 0; k0 < kEnd; k0 += BK) {
    __syncthreads();
    // Load 64 key and value rows, 16 bytes a thread at a time; rows past kvLen are zeros.
    for (int idx = threadIdx.x; idx < BK * (HEAD_DIM / 8); idx += NWARP * 32) {
      const int r = idx / (HEAD_DIM / 8), c = (idx - r * (HEAD_DIM / 8)) * 8;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
      if (k0 + r < kvLen) {
        const long long off = (kvBase + k0 + r) * kvStride + h * HEAD_DIM + c;
        kv = *reinterpret_cast<const uint4*>(k + off);
        vv = *reinterpret_cast<const uint4*>(v + off);
      }
      *reinterpret_cast<uint4*>(&Ks[r][c]) = kv;
      *reinterpret_cast<uint4*>(&Vs[r][c]) = vv;
    }
    __syncthreads();

    // S = Q·Kᵀ for 16 rows × 64 keys.
    float s[BK / 8][4];
#pragma unroll
    for (int n = 0; n < BK / 8; n++) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
      for (int d = 0; d < DSTEPS; d++) {
        const unsigned b0 = *reinterpret_cast<const unsigned*>(&Ks[n * 8 + g][d * 16 + 2 * t4]);
        const unsigned b1 = *reinterpret_cast<const unsigned*>(&Ks[n * 8 + g][d * 16 + 2 * t4 + 8]);
        mma16816(s[n], qa[d], b0, b1);
      }
    }
    // Scale, bias, mask (in log2 units) and the rows' new maxima.
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < BK / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int j = k0 + n * 8 + 2 * t4 + (e & 1);
        const int pos = e < 2 ? pos0 : pos1;
        float x = s[n][e] * scale2 - slope2 * (float)(pos - j);
        if (j > pos || j >= kvLen) x = -INFINITY;
        else if (mask && mask[kvBase + j] == 0) x = -1e30f;
        s[n][e] = x;
        if (e < 2) mx0 = fmaxf(mx0, x); else mx1 = fmaxf(mx1, x);
      }
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1)); mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1)); mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    const float u0 = n0 == -INFINITY ? 0.f : n0, u1 = n1 == -INFINITY ? 0.f : n1;
    const float a0 = exp2f(m0 - u0), a1 = exp2f(m1 - u1);
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
          const float x = exp2f(s[2 * ks + hh][e] - (e < 2 ? u0 : u1));
          p[hh][e] = x;
          if (e < 2) l0 += x; else l1 += x;
        }
      }
      unsigned pa[4] = {pack2(p[0][0], p[0][1]), pack2(p[0][2], p[0][3]), pack2(p[1][0], p[1][1]), pack2(p[1][2], p[1][3])};
#pragma unroll
      for (int dn = 0; dn < HEAD_DIM / 16; dn++) {
        const int mat = lane >> 3;
        const int row = ks * 16 + (mat & 1) * 8 + (lane & 7), col = dn * 16 + (mat >> 1) * 8;
        const unsigned addr = (unsigned)__cvta_generic_to_shared(&Vs[row][col]);
        unsigned v0, v1, v2, v3;
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(v0), "=r"(v1), "=r"(v2), "=r"(v3) : "r"(addr));
        mma16816(o[2 * dn], pa, v0, v1);
        mma16816(o[2 * dn + 1], pa, v2, v3);
      }
    }
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
