// y[r, o] (+)= Σ_k x[r, k]·w[o, k] (+ bias[o]) (→ exact GELU) for a few rows r < R ≤ 8·ROW_TILES: the
// GEMMs of a decode step, which only stream the weights. bf16 operands, fp32 accumulation on the
// tensor cores (mma.sync m16n8k16: 16 outputs × 8 rows a tile), y bf16 or float32 (MPT_Y_F32).
//
// A block owns 16 outputs; its warps split K. Each thread loads 16 bytes of two weight rows and of
// each x row per 32 k, and feeds them to two mmas: the k order inside the 32 is permuted the same way
// for both operands (thread t's 8 values are k+8t … k+8t+7), which leaves the sum unchanged and makes
// every load 16 bytes wide. The warps' partial tiles meet in shared memory, where the epilogue runs.
typedef __nv_bfloat16 bf16;
#ifdef MPT_Y_F32
typedef float YT;
#else
typedef bf16 YT;
#endif

__device__ __forceinline__ void mma16816(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// Weights are read once: keep them out of L1, which holds x for the other warps.
__device__ __forceinline__ uint4 stream16(const bf16* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

extern "C" __global__ void __launch_bounds__(256) skinny_gemm(const bf16* __restrict__ x, const bf16* __restrict__ w, const bf16* __restrict__ bias,
                                       YT* __restrict__ y, int R, int K, int O, int accumulate, int gelu) {
  extern __shared__ float red[];  // [warps][16][8·ROW_TILES]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int nw = blockDim.x >> 5, cols = 8 * ROW_TILES;
  const int o0 = blockIdx.x * 16;
  const int kPer = K / nw, kBeg = warp * kPer, kEnd = kBeg + kPer;
  const bf16* wa = w + (long long)min(o0 + g, O - 1) * K + 8 * t;      // rows past O are read (clamped) and dropped
  const bf16* wb = w + (long long)min(o0 + g + 8, O - 1) * K + 8 * t;
  const bf16* xr[ROW_TILES];
  bool has[ROW_TILES];
#pragma unroll
  for (int n = 0; n < ROW_TILES; n++) { const int r = n * 8 + g; has[n] = r < R; xr[n] = x + (long long)(has[n] ? r : 0) * K + 8 * t; }
  float c[ROW_TILES][4];
#pragma unroll
  for (int n = 0; n < ROW_TILES; n++) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.f;

  // UNROLL steps of 32 k per group; the next group's loads are issued before this group's mmas, so a
  // warp always has two groups of loads in flight.
  uint4 A0[UNROLL], A1[UNROLL], B[UNROLL][ROW_TILES];
  auto load = [&](int k, uint4 (&a0)[UNROLL], uint4 (&a1)[UNROLL], uint4 (&b)[UNROLL][ROW_TILES]) {
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      a0[u] = stream16(wa + k + 32 * u);
      a1[u] = stream16(wb + k + 32 * u);
#pragma unroll
      for (int n = 0; n < ROW_TILES; n++) b[u][n] = has[n] ? *reinterpret_cast<const uint4*>(xr[n] + k + 32 * u) : make_uint4(0, 0, 0, 0);
    }
  };
  load(kBeg, A0, A1, B);
  for (int k = kBeg; k < kEnd; k += 32 * UNROLL) {
    uint4 N0[UNROLL], N1[UNROLL], NB[UNROLL][ROW_TILES];
    const bool more = k + 32 * UNROLL < kEnd;
    if (more) load(k + 32 * UNROLL, N0, N1, NB);
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
#pragma unroll
      for (int n = 0; n < ROW_TILES; n++) {
        mma16816(c[n], A0[u].x, A1[u].x, A0[u].y, A1[u].y, B[u][n].x, B[u][n].y);
        mma16816(c[n], A0[u].z, A1[u].z, A0[u].w, A1[u].w, B[u][n].z, B[u][n].w);
      }
    }
    if (more) {
#pragma unroll
      for (int u = 0; u < UNROLL; u++) {
        A0[u] = N0[u]; A1[u] = N1[u];
#pragma unroll
        for (int n = 0; n < ROW_TILES; n++) B[u][n] = NB[u][n];
      }
    }
  }
  float* mine = red + warp * 16 * cols;
#pragma unroll
  for (int n = 0; n < ROW_TILES; n++) {
    mine[g * cols + n * 8 + 2 * t] = c[n][0];
    mine[g * cols + n * 8 + 2 * t + 1] = c[n][1];
    mine[(g + 8) * cols + n * 8 + 2 * t] = c[n][2];
    mine[(g + 8) * cols + n * 8 + 2 * t + 1] = c[n][3];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 16 * R; i += blockDim.x) {
    const int ol = i % 16, r = i / 16, o = o0 + ol;
    if (o >= O) continue;
    float s = 0.f;
    for (int q = 0; q < nw; q++) s += red[q * 16 * cols + ol * cols + r];
    if (bias) s += __bfloat162float(bias[o]);
    if (gelu) s = 0.5f * s * (1.f + erff(s * 0.70710678118654752f));
    YT* dst = y + (long long)r * O + o;
    if (accumulate) s += ld(*dst);
    *dst = st<YT>(s);
  }
}
