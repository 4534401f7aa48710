// What the producer warpgroup of the warp-specialized backward kernels (flash_backward_dkdv_fa3 in
// flash_backward_wgmma.cu, flash_backward_dq_fa3.cu) shares. Needs wgmma.cuh (sw128) and
// flash_common.cuh (cp_async16) before it.

// Rows [r0, r0 + 64) × HD of a global [.., stride] bf16 matrix into a 128-byte-swizzled tile (column
// blocks of 64 rows × 128 bytes, as load_tile_sw128 lays them out), by the producer's 128 threads (tid):
// thread tid copies chunk tid % CHUNKS of rows tid / CHUNKS + PASS·n, so its swizzle is the same for
// every n. Rows ≥ t read as zeros. No commit: the caller arrives on a barrier.
template <int HD>
__device__ __forceinline__ void produce_tile64(unsigned tile, const __nv_bfloat16* src, int r0, int t, int stride, int tid) {
  constexpr int CHUNKS = HD / 8, PASS = 128 / CHUNKS;
  const int c = tid % CHUNKS, rr = tid / CHUNKS;
  const unsigned to = tile + (c >> 3) * (64 * 128) + sw128(rr, c & 7);
#pragma unroll 1  // the producer runs on 24 registers: unrolled, its addresses spill
  for (int n = 0; n < 64 / PASS; n++) {
    const int r = rr + PASS * n;
    const bool ok = r0 + r < t;
    cp_async16(to + n * PASS * 128, src + (long long)(ok ? r0 + r : 0) * stride + c * 8, ok);
  }
}
