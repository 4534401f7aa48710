// Elementwise and data-movement kernels. A grid-stride loop covers any n.
extern "C" __global__ void f32_to_t(const float* __restrict__ in, T* __restrict__ out, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = st<T>(in[i]);
}
extern "C" __global__ void t_to_f32(const T* __restrict__ in, float* __restrict__ out, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = ld(in[i]);
}
extern "C" __global__ void bf16_to_t(const __nv_bfloat16* __restrict__ in, T* __restrict__ out, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = st<T>(__bfloat162float(in[i]));
}
extern "C" __global__ void add(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = st<T>(ld(a[i]) + ld(b[i]));
}
extern "C" __global__ void scale(const T* __restrict__ x, T* __restrict__ out, float f, long long n) {
  pdl_begin();  // DEPENDENT_LAUNCH (kernels.ts)
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = st<T>(ld(x[i]) * f);
}
extern "C" __global__ void clamp(const T* __restrict__ x, T* __restrict__ out, float limit, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = st<T>(fminf(fmaxf(ld(x[i]), -limit), limit));
}
// Exact GELU, x·Φ(x) = x/2·(1 + erf(x/√2)), as torch.nn.functional.gelu(approximate='none').
extern "C" __global__ void gelu(const T* __restrict__ x, T* __restrict__ out, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    float v = ld(x[i]);
    out[i] = st<T>(gelu_value(v));
  }
}
// out[r, c] = x[r, start + c] for c < count.
extern "C" __global__ void columns(const T* __restrict__ x, T* __restrict__ out, int rows, int width, int start, int count) {
  long long n = (long long)rows * count;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    long long r = i / count; int c = (int)(i - r * count);
    out[i] = x[r * width + start + c];
  }
}
// out[i, :] = table[ids[i], :]. An id outside [0, vocab) writes zeros and records itself (first one wins)
// in error[0..1] = {1, id}, which the host reads at its next download.
extern "C" __global__ void gather_rows(const T* __restrict__ table, const int* __restrict__ ids, T* __restrict__ out,
                                       int n, int width, int vocab, int* error) {
  pdl_begin();  // DEPENDENT_LAUNCH (kernels.ts)
  long long total = (long long)n * width;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    int r = (int)(i / width), c = (int)(i - (long long)r * width);
    int id = ids[r];
    if (id < 0 || id >= vocab) {
      out[i] = st<T>(0.f);
      if (c == 0 && atomicCAS(error, 0, 1) == 0) error[1] = id;
    } else {
      out[i] = table[(long long)id * width + c];
    }
  }
}
// dst [batch, capacity, width] rows [at, at + t) ← src [batch, t, width]; at = *atDev + atHost when atDev is set.
extern "C" __global__ void write_rows(T* __restrict__ dst, const T* __restrict__ src, int batch, int t, int width,
                                      int capacity, const int* atDev, int atHost) {
  int at = atHost + (atDev ? *atDev : 0);
  long long total = (long long)batch * t * width;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    long long row = i / width; int c = (int)(i - row * width);
    int b = (int)(row / t), j = (int)(row - (long long)b * t);
    dst[((long long)b * capacity + at + j) * width + c] = src[i];
  }
}
// counter[0] += by (the device-side position of a captured decode step).
extern "C" __global__ void advance(int* counter, int by) {
  pdl_begin();  // DEPENDENT_LAUNCH (kernels.ts)
  if (threadIdx.x == 0 && blockIdx.x == 0) counter[0] += by;
}
// out[i] = mean + std·N(0,1) from a hash of (seed, i) (Box–Muller): random weights for benchmarks,
// made on the device so that 1.3B parameters never pass through the host.
__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
extern "C" __global__ void fill_normal(T* __restrict__ out, long long n, unsigned long long seed, float mean, float std) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    unsigned long long r = mix64(seed ^ mix64((unsigned long long)i));
    float u1 = ((r >> 40) + 1) * (1.f / 16777217.f), u2 = ((r >> 16) & 0xffffff) * (1.f / 16777216.f);
    out[i] = st<T>(mean + std * sqrtf(-2.f * __logf(u1)) * __cosf(6.2831853f * u2));
  }
}
// out[i, :] = float(table[ids[i], :]): the embedding into the float32 residual stream of the bf16 decoder.
extern "C" __global__ void gather_rows_f32(const T* __restrict__ table, const int* __restrict__ ids, float* __restrict__ out,
                                           int n, int width, int vocab, int* error) {
  pdl_begin();  // launched without programmatic serialization (kernels.ts), so the wait returns at once; the trigger lets the next kernel start early
  long long total = (long long)n * width;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    int r = (int)(i / width), c = (int)(i - (long long)r * width);
    int id = ids[r];
    if (id < 0 || id >= vocab) {
      out[i] = 0.f;
      if (c == 0 && atomicCAS(error, 0, 1) == 0) error[1] = id;
    } else {
      out[i] = ld(table[(long long)id * width + c]);
    }
  }
}
// GELU on 8 bf16 at a time (16-byte loads and stores): the prefill's MLP hidden layer, n % 8 == 0.
extern "C" __global__ void gelu_bf16x8(const uint4* __restrict__ x, uint4* __restrict__ out, long long n8) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n8; i += (long long)gridDim.x * blockDim.x) {
    uint4 v = x[i];
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&v);
#pragma unroll
    for (int j = 0; j < 4; j++) {
      float2 f = __bfloat1622float2(h[j]);
      f.x = gelu_value(f.x);
      f.y = gelu_value(f.y);
      h[j] = __floats2bfloat162_rn(f.x, f.y);
    }
    out[i] = v;
  }
}

#include "gelu_table.cuh"
// gelu_table.cuh: the bf16 GELU of each tabled input, as gelu computes it.
extern "C" __global__ void gelu_table_build(unsigned short* __restrict__ table) {
  for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < GELU_TABLE; s += gridDim.x * blockDim.x)
    table[s] = __bfloat16_as_ushort(__float2bfloat16_rn(gelu_value(gelu_slot_input(s))));
}
__device__ __forceinline__ unsigned gelu_bits(const unsigned short* lut, unsigned h) {
  const int s = gelu_slot(h);
  return s >= 0 ? lut[s] : __bfloat16_as_ushort(__float2bfloat16_rn(gelu_value(__uint_as_float(h << 16))));
}
// gelu_bf16x8's results through the table (gelu_table.cuh), n8 16-byte vectors: a grid of about one
// wave, each thread GELU_UNROLL vectors a turn, all loaded before any is computed.
extern "C" __global__ void __launch_bounds__(512) gelu_table8(const uint4* __restrict__ x, uint4* __restrict__ out, long long n8,
                                                             const unsigned short* __restrict__ table) {
  __shared__ __align__(16) unsigned short lut[GELU_TABLE];
  gelu_table_to_shared(table, lut);
  for (long long i0 = (long long)blockIdx.x * blockDim.x * GELU_UNROLL + threadIdx.x; i0 < n8; i0 += (long long)gridDim.x * blockDim.x * GELU_UNROLL) {
    uint4 v[GELU_UNROLL];
#pragma unroll
    for (int u = 0; u < GELU_UNROLL; u++) if (i0 + u * blockDim.x < n8) v[u] = x[gelu_at(i0 + u * blockDim.x, n8)];
#pragma unroll
    for (int u = 0; u < GELU_UNROLL; u++) {
      if (i0 + u * blockDim.x < n8) {
        unsigned* w = reinterpret_cast<unsigned*>(&v[u]);
#pragma unroll
        for (int j = 0; j < 4; j++) w[j] = gelu_bits(lut, w[j] & 0xffffu) | (gelu_bits(lut, w[j] >> 16) << 16);
        out[gelu_at(i0 + u * blockDim.x, n8)] = v[u];
      }
    }
  }
}
