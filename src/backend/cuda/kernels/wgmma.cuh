// Warpgroup matrix multiply-accumulate (wgmma, sm_90a only) and the shared-memory layout it reads: the
// primitives of the wgmma attention kernels (flash_forward_fa3.cu, flash_backward_wgmma.cu). PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions".
//
// A warpgroup (4 consecutive warps, 128 threads) computes D[64 × N] (+)= A[64 × 16] · B[16 × N] in one
// instruction, asynchronously: wgmma_fence() before the first product whose registers were written by
// ordinary instructions, the products, wgmma_commit() to close a group, wgmma_wait<n>() until at most n
// groups are in flight. Only after the wait may the accumulators (or A registers) be read or written;
// wgmma_fence_regs pins the compiler's reads of the accumulators after that wait.
//
// Register fragments (warp w of the warpgroup owns rows 16w..16w+15; lane = 4g + t):
//   D, float, N/2 registers: d[4j + e] = (row 16w + g + 8·(e >> 1), column 8j + 2t + (e & 1)) — mma.sync's
//     m16n8 C layout repeated over the N/8 column tiles.
//   A, bf16, 4 registers: mma.sync's m16n8k16 A layout, {(g, 2t..), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)},
//     so columns 16kk..16kk+15 of a D fragment, packed to bf16 pairwise, are the A of a next product.
//
// Shared-memory operands: 128-byte swizzle throughout. A tile of R rows × 64 bf16 columns is R rows of
// 128 bytes; the 16-byte chunk c of row r lies at chunk c ^ (r & 7) (tile start 1024-byte aligned, so the
// hardware's address-bit XOR matches). Wider tiles are column blocks of 64, one after another. The same
// tile serves both majornesses:
//   K-major (rows = M or N, columns = K: trans 0): SBO = 1024 (8 rows to the next 8); LBO unused (1);
//     a k-step of 16 columns moves the start 32 bytes inside a block, or to the next column block.
//   MN-major (rows = K, columns = N: trans 1): SBO = 1024 (8 K-rows to the next 8), LBO = the column-block
//     stride (64 N-columns to the next 64); a k-step of 16 rows moves the start 16 × 128 bytes.

typedef unsigned long long wgmma_desc_t;

// Byte offset of 16-byte chunk `chunk` (0..7) of row `row` inside a 128-byte-swizzled block.
__device__ __forceinline__ unsigned sw128(int row, int chunk) {
  return (unsigned)(row * 128 + ((chunk ^ (row & 7)) << 4));
}

// Descriptor of a shared operand at byte address `addr` (shared window), 128-byte swizzle: bits 0-13 the
// address / 16, 16-29 LBO / 16, 32-45 SBO / 16, 62-63 the swizzle mode (1 = 128 bytes); base offset 0.
__device__ __forceinline__ wgmma_desc_t wgmma_desc(unsigned addr, unsigned lbo, unsigned sbo) {
  return (wgmma_desc_t)((addr & 0x3FFFF) >> 4) | ((wgmma_desc_t)(lbo >> 4) << 16) | ((wgmma_desc_t)(sbo >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(N) : "memory"); }
// Shared memory written by ordinary stores or cp.async, read next by wgmma (the async proxy): each writer
// runs this after its writes and before the barrier that publishes them.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Ties each accumulator register to this point (volatile asm keeps its order against the wait before it),
// so the compiler cannot read one before the products that write it are complete.
template <int R> __device__ __forceinline__ void wgmma_fence_regs(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; i++) asm volatile("" : "+f"(d[i]) :: "memory");
}

// A warpgroup's D fragment (64 rows × 2R columns in R registers a thread, the layout above) times `scale`,
// as bf16 into global rows of `stride` elements from `base`; j0 = this thread's first row (16w + g), rows
// ≥ t dropped. The dk/dv and dq kernels' output stores.
template <int R> __device__ __forceinline__ void wgmma_store_rows_bf16(__nv_bfloat16* base, const float (&acc)[R], int j0, int t, int stride, float scale) {
  const int t4 = threadIdx.x & 3;
#pragma unroll
  for (int n = 0; n < R / 4; n++) {
    const int c = n * 8 + 2 * t4;
    if (j0 < t) *reinterpret_cast<__nv_bfloat162*>(base + (long long)j0 * stride + c) = __floats2bfloat162_rn(acc[4 * n] * scale, acc[4 * n + 1] * scale);
    if (j0 + 8 < t) *reinterpret_cast<__nv_bfloat162*>(base + (long long)(j0 + 8) * stride + c) = __floats2bfloat162_rn(acc[4 * n + 2] * scale, acc[4 * n + 3] * scale);
  }
}

#define WG_D8(d, i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])

// d[64 × 64] (+)= A · B, both from shared memory, both K-major. accumulate = 0: d = A · B.
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[32], wgmma_desc_t a, wgmma_desc_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : WG_D8(d, 0), WG_D8(d, 8), WG_D8(d, 16), WG_D8(d, 24)
      : "l"(a), "l"(b), "r"(accumulate));
}

// d[64 × 128] (+)= A · B, both from shared memory, both K-major. accumulate = 0: d = A · B.
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], wgmma_desc_t a, wgmma_desc_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : WG_D8(d, 0), WG_D8(d, 8), WG_D8(d, 16), WG_D8(d, 24), WG_D8(d, 32), WG_D8(d, 40), WG_D8(d, 48), WG_D8(d, 56)
      : "l"(a), "l"(b), "r"(accumulate));
}

// d[64 × 64] (+)= A · B, A from registers (the fragment above), B from shared memory, MN-major when
// TransB = 1 (K-major when 0).
template <int TransB>
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const unsigned (&a)[4], wgmma_desc_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
      : WG_D8(d, 0), WG_D8(d, 8), WG_D8(d, 16), WG_D8(d, 24)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(TransB));
}

// d[64 × 128] (+)= A · B, A from registers, B from shared memory (MN-major when TransB = 1).
template <int TransB>
__device__ __forceinline__ void wgmma_m64n128k16_rs(float (&d)[64], const unsigned (&a)[4], wgmma_desc_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
      : WG_D8(d, 0), WG_D8(d, 8), WG_D8(d, 16), WG_D8(d, 24), WG_D8(d, 32), WG_D8(d, 40), WG_D8(d, 48), WG_D8(d, 56)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(TransB));
}
#undef WG_D8

// The products above chosen by N (64 or 128), for kernels whose tile widths are compile-time options.
template <int N> __device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], wgmma_desc_t a, wgmma_desc_t b, int accumulate) {
  if constexpr (N == 64) wgmma_m64n64k16_ss(d, a, b, accumulate); else wgmma_m64n128k16_ss(d, a, b, accumulate);
}
template <int N, int TransB> __device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const unsigned (&a)[4], wgmma_desc_t b, int accumulate) {
  if constexpr (N == 64) wgmma_m64n64k16_rs<TransB>(d, a, b, accumulate); else wgmma_m64n128k16_rs<TransB>(d, a, b, accumulate);
}
