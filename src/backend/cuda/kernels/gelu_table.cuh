// Exact GELU (torch's approximate='none') and its derivative for bf16 inputs through a table, so that
// the training step's GELU kernels spend about 10 instructions an element instead of the ~30 (forward)
// and ~50 (backward) that erff and expf cost, leaving the issue slots to the memory traffic. Measured
// (H100, bench/RESULTS-cuda-train.md) the old kernels were already close to the memory's limit at the
// training shape: the tables gain 3–5% there (2.79 / 2.85 TB/s against 2.70 / 2.78 right after a write).
// A bf16 input has 65,536 possible values; the table holds the result for those of magnitude in
// [2^(GELU_EXP_LO − 127), 2^(GELU_EXP_HI − 127)) = [2^-15, 16) of either sign (4,864 entries), where
// practically every activation lies; any other input (0, tiny, large, inf, NaN) is computed in place.
// The table is built on the device (gelu_table_build, gelu_slope_table_build) with the very formula the
// plain kernels use (common.cuh's gelu_value and gelu_slope), so each
// result is bit-identical to theirs: test/cuda-kernels.test.ts and test/cuda-train-ops.test.ts compare
// every one of the 65,536 inputs against gelu_bf16x8 and gelu_backward8.
// Fixed, not options: gelu-table.ts sizes the table from the same two numbers (GELU_TABLE_ENTRIES).
#define GELU_EXP_LO 112
#define GELU_EXP_HI 131
#define GELU_PER_SIGN ((GELU_EXP_HI - GELU_EXP_LO) << 7)
#define GELU_TABLE (2 * GELU_PER_SIGN)
// 16-byte vectors a thread loads before it computes any (loads in flight per thread).
#ifndef GELU_UNROLL
#define GELU_UNROLL 2
#endif

// The table slot of the bf16 with bits h (sign-major: slot = sign·GELU_PER_SIGN + magnitude bits −
// the lowest tabled magnitude), or −1 outside the table.
__device__ __forceinline__ int gelu_slot(unsigned h) {
  const unsigned k = (h & 0x7fffu) - (GELU_EXP_LO << 7);
  return k < GELU_PER_SIGN ? (int)(k + (h >> 15) * GELU_PER_SIGN) : -1;
}
// The input of slot s as a float (gelu_slot's inverse).
__device__ __forceinline__ float gelu_slot_input(int s) {
  const unsigned sign = s >= GELU_PER_SIGN ? 1u : 0u;
  return __uint_as_float(((sign << 15) | ((unsigned)s - sign * GELU_PER_SIGN + (GELU_EXP_LO << 7))) << 16);
}
// The table from global memory into shared memory (GELU_TABLE · bytes is a multiple of 16), then a barrier.
template <typename E>
__device__ __forceinline__ void gelu_table_to_shared(const E* __restrict__ table, E* lut) {
  for (int i = threadIdx.x; i < GELU_TABLE * (int)sizeof(E) / 16; i += blockDim.x)
    reinterpret_cast<uint4*>(lut)[i] = reinterpret_cast<const uint4*>(table)[i];
  __syncthreads();
}
// The position of the i-th 16-byte vector taken: GELU_REVERSE goes last to first, so that it starts on
// the end its producer wrote last (still in L2) and ends on the start its consumer reads first.
__device__ __forceinline__ long long gelu_at(long long i, long long n8) {
#ifdef GELU_REVERSE
  return n8 - 1 - i;
#else
  return i;
#endif
}
