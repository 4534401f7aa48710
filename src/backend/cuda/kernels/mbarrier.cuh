// Shared-memory mbarriers (sm_80+; the parity wait is sm_90) for producer/consumer rings: a producer
// warpgroup fills a stage and the barrier completes a phase when the stage's data has landed (full); the
// consumers arrive when they are done reading it (empty). PTX ISA, "Parallel Synchronization and
// Communication Instructions: mbarrier".
//
// Phases: a barrier initialized with count n completes phase 0 after n arrivals, then phase 1 after n
// more, and so on. mbar_wait(bar, parity) returns once the phase of that parity most recently due has
// completed; on a fresh barrier, parity 1 counts as complete (the phase "before" phase 0), which lets a
// producer pass its first wait on an empty barrier without a special case.

__device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(bar), "r"(count) : "memory");
}

// The barriers' initialization, made visible to the other threads and the async proxy (bulk copies)
// before anyone arrives on them or polls them.
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// One arrival of this thread.
__device__ __forceinline__ void mbar_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" :: "r"(bar) : "memory");
}

// One arrival of this thread that also expects `bytes` more of bulk copies (complete_tx) before the
// phase can complete.
__device__ __forceinline__ void mbar_arrive_expect_tx(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" :: "r"(bar), "r"(bytes) : "memory");
}

// One arrival of this thread, made by the hardware once every cp.async this thread issued before has
// landed (noinc: it counts as one of the barrier's expected arrivals).
__device__ __forceinline__ void mbar_arrive_cp_async(unsigned bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" :: "r"(bar) : "memory");
}

// Spins until the phase of this parity has completed (try_wait suspends the thread for a while in
// hardware between polls, so the spin costs little issue bandwidth).
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
  unsigned done = 0;
  do {
    asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done) : "r"(bar), "r"(parity) : "memory");
  } while (!done);
}

// `bytes` global → shared by the TMA unit (a 1-D bulk copy; addresses and size multiples of 16), its
// completion counted on mbarrier `bar` (which must expect those bytes: mbar_arrive_expect_tx).
__device__ __forceinline__ void bulk_copy_to_shared(unsigned dst, const void* src, unsigned bytes, unsigned bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
               :: "r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}
// The same with an L2 cache policy (from createpolicy), e.g. evict_first for data read once.
__device__ __forceinline__ void bulk_copy_to_shared(unsigned dst, const void* src, unsigned bytes, unsigned bar, unsigned long long policy) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;\n"
               :: "r"(dst), "l"(src), "r"(bytes), "r"(bar), "l"(policy) : "memory");
}

// A CUtensorMap (cuda.h) as a kernel parameter: 128 opaque bytes that cuTensorMapEncodeTiled made on the
// host (tensor-map.ts), passed by value as `const __grid_constant__ TensorMap` (kernel argument kind m):
// the TMA unit reads it from the parameter space by its generic address. (NVRTC has no cuda.h.)
struct __align__(64) TensorMap { unsigned long long opaque[16]; };

// Brings the map into the TMA unit's descriptor cache ahead of its first copy.
__device__ __forceinline__ void tensor_map_prefetch(const TensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" :: "l"(reinterpret_cast<unsigned long long>(map)) : "memory");
}

// One box of a 3-D tensor map (c0 the innermost coordinate, in elements; c1, c2 the outer ones) global →
// shared at dst, laid out as the map says (swizzle), elements out of the tensor's bounds written as the
// map's fill (zeros); its bytes complete_tx on mbarrier `bar` (which must expect them: mbar_arrive_expect_tx).
__device__ __forceinline__ void tensor_load_3d(unsigned dst, const TensorMap* map, int c0, int c1, int c2, unsigned bar) {
  asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n"
               :: "r"(dst), "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar) : "memory");
}

// ROWS × HD bf16 of a tensor map whose boxes are 64 columns × ROWS rows (tensor-map.ts) into a 128-byte-
// swizzled tile at dst: the box of columns col + 64s at dst + s·ROWS·128, the layout the cp.async producers
// write by hand (produce_rows in flash_forward_fa3.cu, produce_tile64). Rows row.. of block `batch`; the
// copies complete_tx on `bar`, whose expect_tx the caller has made.
template <int ROWS, int HD>
__device__ __forceinline__ void tensor_load_rows(unsigned dst, const TensorMap* map, int col, int row, int batch, unsigned bar) {
#pragma unroll
  for (int s = 0; s < HD / 64; s++) tensor_load_3d(dst + s * ROWS * 128, map, col + s * 64, row, batch, bar);
}
