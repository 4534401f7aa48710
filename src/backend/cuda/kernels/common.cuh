// Prepended to every kernel source by kernels.ts. T is the storage type of activations and weights:
// __nv_bfloat16 when MPT_BF16 is defined, else float. Arithmetic is always in float.
#include <cuda_bf16.h>
// Every kernel is compiled without __restrict__, so loads from `const T* __restrict__` inputs stay
// coherent ld.global instead of the non-coherent ld.global.nc the compiler would otherwise choose: that
// path's contract is data that stays read-only while the kernel lives, and under programmatic dependent
// launch a kernel starts while the kernel before it still writes its inputs (it reads them only after
// griddepcontrol.wait), so the non-coherent path gives no guarantee of seeing those writes. (The suspect of
// a rare LayerNorm + GEMM twin failure, bench/RESULTS-cuda.md; test/cuda-pdl.test.ts did not reproduce it
// either way.) Only the weights, constant for the whole run, are streamed non-coherently, by explicit
// ld.global.nc (skinny_gemm.cu stream16). MPT_NC_LOADS keeps __restrict__ (comparisons only).
#ifndef MPT_NC_LOADS
#define __restrict__
#endif
// NVRTC has no <math.h>: INFINITY by its bits.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#ifdef MPT_BF16
typedef __nv_bfloat16 T;
#else
typedef float T;
#endif
// Programmatic dependent launch (sm_90+; no-ops before). pdl_wait: block until the kernels this one
// depends on have finished and their writes are visible (returns at once when the kernel was launched
// without the attribute). Every thread of a kernel in DEPENDENT_LAUNCH (kernels.ts) runs it before its
// first access to memory another kernel writes, so a finished kernel implies a finished predecessor.
// pdl_trigger: let the next kernel's blocks be scheduled now (they wait in their own pdl_wait).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// Both, at the start of a small kernel that has nothing to do before its inputs are ready. The trigger
// comes first, so the kernel after it (a GEMM) is scheduled at once and issues its weight loads while
// this one waits and runs (PDL_TRIGGER_LATE: after the wait, for comparison). Launches can run ahead
// only as far as the machine holds the blocks: a trigger fires once every block of its grid has run it.
__device__ __forceinline__ void pdl_begin() {
#ifdef PDL_TRIGGER_LATE
  pdl_wait(); pdl_trigger();
#else
  pdl_trigger(); pdl_wait();
#endif
}

__device__ __forceinline__ float ld(const float x) { return x; }
__device__ __forceinline__ float ld(const __nv_bfloat16 x) { return __bfloat162float(x); }
template <typename U> __device__ __forceinline__ U st(float x);
template <> __device__ __forceinline__ float st<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 st<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Sum / max over a block of blockDim.x threads (a multiple of 32, at most 1024). Every thread gets the result.
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// The sum over the block with `part` (32 floats of shared memory) as the warps' slots: one barrier, so
// a kernel that reduces twice into different slots needs one barrier a reduction.
__device__ __forceinline__ float block_sum_into(float v, float* part) {
  v = warp_sum(v);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = lane < nw ? part[lane] : 0.f;
  return warp_sum(v);
}
__device__ float block_sum(float v) {
  __shared__ float part[32];
  __syncthreads();  // the previous call's reads of part are done
  return block_sum_into(v, part);
}
__device__ float block_max(float v) {
  __shared__ float part[32];
  __syncthreads();
  v = warp_max(v);
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = lane < nw ? part[lane] : -INFINITY;
  return warp_max(v);
}

// Mean and 1/sqrt(var + eps) of a row of `width` values from its per-16-column (mean, M2) pairs
// (skinny_gemm.cu's statsOut), merged by one warp in a fixed order: every lane gets the result.
__device__ __forceinline__ void merge_row_stats(const float2* p, int tiles, int width, float eps, float& mean, float& rstd) {
  const int lane = threadIdx.x & 31;
  float s = 0.f;
  for (int i = lane; i < tiles; i += 32) s += p[i].x;
  const float m = warp_sum(s) / tiles;
  float q = 0.f;
  for (int i = lane; i < tiles; i += 32) { const float2 v = p[i]; const float dm = v.x - m; q += v.y + 16.f * dm * dm; }
  mean = m;
  rstd = rsqrtf(warp_sum(q) / width + eps);
}

// Exact GELU (torch's approximate='none'), x·Φ(x) = x/2·(1 + erf(x/√2)), and its derivative
// GELU'(x) = Φ(x) + x·φ(x): the one expression of each that every GELU kernel and epilogue uses, so that
// their results (and gelu_table.cuh's tables) agree to the bit.
__device__ __forceinline__ float gelu_value(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_slope(float v) {
  const float cdf = 0.5f * (1.f + erff(v * 0.70710678118654752f));
  const float pdf = 0.3989422804014327f * expf(-0.5f * v * v);
  return cdf + v * pdf;
}

// 8 consecutive values as floats, with 16-byte accesses (p 16-byte aligned).
__device__ __forceinline__ void load8(const float* p, float* v) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float* v) {
  uint4 u = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int j = 0; j < 4; j++) { const float2 f = __bfloat1622float2(h[j]); v[2 * j] = f.x; v[2 * j + 1] = f.y; }
}
__device__ __forceinline__ void store8(float* p, const float* v) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void store8(__nv_bfloat16* p, const float* v) {
  uint4 u;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
  for (int j = 0; j < 4; j++) h[j] = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
  *reinterpret_cast<uint4*>(p) = u;
}
// 8 values as stored (16 bytes of bf16, 32 of float): rows held this way between their passes cost a
// bf16 row half the registers of floats (more blocks an SM, more of the row in flight).
template <typename U> struct Stored8 { uint4 u[sizeof(U) / 2]; };
template <typename U> __device__ __forceinline__ void unpack_stored8(const Stored8<U>& c, float* v) { load8(reinterpret_cast<const U*>(&c), v); }
