// Elementwise and reduction kernels of the training ops (training.ts). T is the storage type of the
// source tensors (bf16 with MPT_BF16, else float); gradient accumulators are always float32.
// A grid-stride loop covers any n.
#define GRID_STRIDE(i, n) for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// dy·GELU'(x) for the exact GELU: Φ(x) + x·φ(x).
extern "C" __global__ void gelu_backward(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ out, long long n) {
  GRID_STRIDE(i, n) {
    const float v = ld(x[i]);
    out[i] = st<T>(ld(dy[i]) * gelu_slope(v));
  }
}
// torch.clamp's gradient: dy where -limit ≤ x ≤ limit (bounds included), 0 elsewhere.
extern "C" __global__ void clamp_backward(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ out, float limit, long long n) {
  GRID_STRIDE(i, n) {
    const float v = ld(x[i]);
    out[i] = (v >= -limit && v <= limit) ? dy[i] : st<T>(0.f);
  }
}
// dst += factor·src (dst float32).
extern "C" __global__ void add_into(float* __restrict__ dst, const T* __restrict__ src, float factor, long long n) {
  GRID_STRIDE(i, n) dst[i] = fmaf(factor, ld(src[i]), dst[i]);
}
// dst ← factor·dst.
extern "C" __global__ void scale_in_place(T* __restrict__ dst, float factor, long long n) {
  GRID_STRIDE(i, n) dst[i] = st<T>(ld(dst[i]) * factor);
}
// Block sums in float64 (blockDim.x a multiple of 32, at most 1024).
__device__ double block_sum_double(double v) {
  __shared__ double part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = lane < nw ? part[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// partial[block] = Σ x² over this block's share (float64); sum_doubles adds the partials.
extern "C" __global__ void sum_squares_partial(const T* __restrict__ x, long long n, double* __restrict__ partial) {
  double acc = 0.0;
  GRID_STRIDE(i, n) { const double v = ld(x[i]); acc += v * v; }
  acc = block_sum_double(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
// The same for float32 x at a 16-byte aligned address: float4 loads, four in flight a thread; the
// n % 4 tail goes to the first thread.
extern "C" __global__ void sum_squares_partial4(const float* __restrict__ x, long long n, double* __restrict__ partial) {
  const float4* x4 = reinterpret_cast<const float4*>(x);
  const long long n4 = n >> 2, stride = (long long)gridDim.x * blockDim.x;
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  double acc = 0.0;
  for (; i + 3 * stride < n4; i += 4 * stride) {
    float4 v[4];
#pragma unroll
    for (int u = 0; u < 4; u++) v[u] = x4[i + u * stride];
#pragma unroll
    for (int u = 0; u < 4; u++) acc += (double)v[u].x * v[u].x + (double)v[u].y * v[u].y + (double)v[u].z * v[u].z + (double)v[u].w * v[u].w;
  }
  for (; i < n4; i += stride) { const float4 v = x4[i]; acc += (double)v.x * v.x + (double)v.y * v.y + (double)v.z * v.z + (double)v.w * v.w; }
  if (blockIdx.x == 0 && threadIdx.x == 0) for (long long j = n4 << 2; j < n; j++) acc += (double)x[j] * x[j];
  acc = block_sum_double(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
// Σ x² over many float32 tensors in one launch (the global gradient norm: one launch, not one a
// tensor): a table of tensors (16-byte aligned, the host checks) and of chunks (tensor, chunk index);
// block b adds chunks b, b + gridDim.x, … in that order (deterministic) and writes its partial, which
// sum_doubles adds. A thread has four float4 loads in flight; a tensor's last partial group of four is
// done element by element.
struct SquaresTensor { const float* x; long long n; };
#ifndef SQ_CHUNK
#define SQ_CHUNK 65536
#endif
__device__ __forceinline__ double squares4(const float4 v) { return (double)v.x * v.x + (double)v.y * v.y + (double)v.z * v.z + (double)v.w * v.w; }
extern "C" __global__ void __launch_bounds__(256) sum_squares_multi(const SquaresTensor* __restrict__ tensors, const int2* __restrict__ chunks, int count,
                                                                  double* __restrict__ partial) {
  double acc = 0.0;
  for (int c = blockIdx.x; c < count; c += gridDim.x) {
    const int2 ch = chunks[c];
    const SquaresTensor t = tensors[ch.x];
    const long long start = (long long)ch.y * SQ_CHUNK, end = min(start + (long long)SQ_CHUNK, t.n);
    const long long step = 4LL * blockDim.x;
    long long i = start + 4LL * threadIdx.x;
    for (; i + 3 * step + 4 <= end; i += 4 * step) {
      float4 v[4];
#pragma unroll
      for (int u = 0; u < 4; u++) v[u] = __ldg(reinterpret_cast<const float4*>(t.x + i + u * step));
#pragma unroll
      for (int u = 0; u < 4; u++) acc += squares4(v[u]);
    }
    for (; i < end; i += step) {
      if (i + 4 <= end) acc += squares4(__ldg(reinterpret_cast<const float4*>(t.x + i)));
      else for (long long j = i; j < end; j++) acc += (double)t.x[j] * t.x[j];
    }
  }
  acc = block_sum_double(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
extern "C" __global__ void sum_doubles(const double* __restrict__ partial, int count, double* __restrict__ out) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = block_sum_double(acc);
  if (threadIdx.x == 0) out[0] = acc;
}
// The global gradient norm and the clipping factor from Σ g² (sum_doubles' result), on the device so
// that no step waits for the host: out64[0] = norm = sqrt(Σ g²) and outFactor[0] = maxNorm / (norm + 1e-6)
// when that is below 1, else 1 (no maximum: maxNorm < 0) — torch's clip_grad_norm_, in float64 as the
// host path computes it, the factor rounded to float32 as scale_in_place receives it.
extern "C" __global__ void grad_clip_factor(const double* __restrict__ sumSquares, double maxNorm, double* __restrict__ out64, float* __restrict__ outFactor) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  const double norm = sqrt(sumSquares[0]);
  const double coef = maxNorm / (norm + 1e-6);
  out64[0] = norm;
  outFactor[0] = (maxNorm >= 0.0 && coef < 1.0) ? (float)coef : 1.f;
}
// out[0] = Σ x (float64 accumulation) of float32 x: the summed loss.
extern "C" __global__ void sum_floats(const float* __restrict__ x, int n, float* __restrict__ out) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
  acc = block_sum_double(acc);
  if (threadIdx.x == 0) out[0] = (float)acc;
}
// dst[ids[i], :] += factor·dy[i, :] (dst float32 [vocab, width]): atomics, since ids repeat.
// An id outside [0, vocab) is skipped and recorded in error[0..1] = {1, id} as gather_rows does.
extern "C" __global__ void embedding_backward(float* __restrict__ dst, const int* __restrict__ ids, const T* __restrict__ dy,
                                              int n, int width, int vocab, float factor, int* error) {
  GRID_STRIDE(i, (long long)n * width) {
    const int r = (int)(i / width), c = (int)(i - (long long)r * width);
    const int id = ids[r];
    if (id < 0 || id >= vocab) {
      if (c == 0 && atomicCAS(error, 0, 1) == 0) error[1] = id;
    } else {
      atomicAdd(dst + (long long)id * width + c, factor * ld(dy[i]));
    }
  }
}
// out[c] = Σ_rows dy[r, c] (float32): a bias gradient. One thread a column, rows in order.
extern "C" __global__ void column_sums(const T* __restrict__ dy, float* __restrict__ out, int rows, int width) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < width; c += gridDim.x * blockDim.x) {
    float acc = 0.f;
    for (int r = 0; r < rows; r++) acc += ld(dy[(long long)r * width + c]);
    out[c] = acc;
  }
}
// gelu_backward for n % 8 == 0 over 16-byte aligned tensors: 8 values a thread (n8 = n / 8).
extern "C" __global__ void gelu_backward8(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ out, long long n8) {
  GRID_STRIDE(i, n8) {
    float v[8], g[8];
    load8(x + 8 * i, v);
    load8(dy + 8 * i, g);
#pragma unroll
    for (int e = 0; e < 8; e++) {
      g[e] *= gelu_slope(v[e]);
    }
    store8(out + 8 * i, g);
  }
}

#include "gelu_table.cuh"
// gelu_table.cuh: GELU'(x) as a float for each tabled input, as gelu_backward8 computes it.
extern "C" __global__ void gelu_slope_table_build(float* __restrict__ table) {
  for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < GELU_TABLE; s += gridDim.x * blockDim.x)
    table[s] = gelu_slope(gelu_slot_input(s));
}
__device__ __forceinline__ float gelu_slope_of(const float* lut, unsigned h) {
  const int s = gelu_slot(h);
  return s >= 0 ? lut[s] : gelu_slope(__uint_as_float(h << 16));
}
// gelu_backward8's results through the table of GELU' (gelu_table.cuh): dy·GELU'(x) in float, rounded
// to bf16 as it does; n8 16-byte vectors, a grid of about one wave, each thread GELU_UNROLL vectors of
// x and of dy a turn, all loaded before any is computed.
extern "C" __global__ void __launch_bounds__(512) gelu_backward_table8(const uint4* __restrict__ dy, const uint4* __restrict__ x,
                                                                      uint4* __restrict__ out, long long n8, const float* __restrict__ table) {
  __shared__ __align__(16) float lut[GELU_TABLE];
  gelu_table_to_shared(table, lut);
  for (long long i0 = (long long)blockIdx.x * blockDim.x * GELU_UNROLL + threadIdx.x; i0 < n8; i0 += (long long)gridDim.x * blockDim.x * GELU_UNROLL) {
    uint4 xv[GELU_UNROLL], gv[GELU_UNROLL];
#pragma unroll
    for (int u = 0; u < GELU_UNROLL; u++) {
      if (i0 + u * blockDim.x < n8) {
        const long long at = gelu_at(i0 + u * blockDim.x, n8);
        xv[u] = x[at];
        gv[u] = dy[at];
      }
    }
#pragma unroll
    for (int u = 0; u < GELU_UNROLL; u++) {
      if (i0 + u * blockDim.x < n8) {
        const unsigned* xw = reinterpret_cast<const unsigned*>(&xv[u]);
        __nv_bfloat162* g = reinterpret_cast<__nv_bfloat162*>(&gv[u]);
#pragma unroll
        for (int j = 0; j < 4; j++) {
          float2 f = __bfloat1622float2(g[j]);
          f.x *= gelu_slope_of(lut, xw[j] & 0xffffu);
          f.y *= gelu_slope_of(lut, xw[j] >> 16);
          g[j] = __floats2bfloat162_rn(f.x, f.y);
        }
        out[gelu_at(i0 + u * blockDim.x, n8)] = gv[u];
      }
    }
  }
}
