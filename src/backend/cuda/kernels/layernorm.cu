// LayerNorm over the last dimension, one block per row, the row held in registers (NPER values a
// thread, strided so that a warp's loads are contiguous): one read of the row, the mean, then the
// variance as the mean squared deviation from the registers, then (x - mean)·rstd·w + b.
// X is the input's type: float with MPT_X_F32 (the float32 residual stream of the bf16 decoder), else T.
// With `residual` set, x ← x + residual first (written back), so the add costs no pass of its own.
#ifdef MPT_X_F32
typedef float XT;
#else
typedef T XT;
#endif
#define NPER 16

extern "C" __global__ void layernorm(XT* __restrict__ x, const XT* __restrict__ residual, const T* __restrict__ w,
                                     const T* __restrict__ b, T* __restrict__ out, int d, float eps) {
  pdl_begin();  // DEPENDENT_LAUNCH (kernels.ts)
  const long long row = blockIdx.x;
  XT* xr = x + row * d;
  float v[NPER];
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < NPER; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    float t = 0.f;
    if (i < d) {
      t = ld(xr[i]);
      if (residual) { t += ld(residual[row * d + i]); xr[i] = st<XT>(t); t = ld(xr[i]); }
    }
    v[j] = t;
    s += t;
  }
  const float mean = block_sum(s) / d;
  float q = 0.f;
#pragma unroll
  for (int j = 0; j < NPER; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < d) { const float t = v[j] - mean; q += t * t; }
  }
  const float rstd = rsqrtf(block_sum(q) / d + eps);
  T* o = out + row * d;
#pragma unroll
  for (int j = 0; j < NPER; j++) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < d) {
      float y = (v[j] - mean) * rstd * ld(w[i]);
      if (b) y += ld(b[i]);
      o[i] = st<T>(y);
    }
  }
}

// The same for d % 8 == 0 with 16-byte accesses: thread i holds chunks i and i + blockDim.x of 8 values
// as stored, and w's, loaded with x before the reductions (b, rare, after them); two barriers a row.
// The arithmetic and its order are those of the float-register, block_sum version it replaced (its
// outputs bit-identical at 1 to 16384 rows: bench/RESULTS-cuda-train.md), in fewer registers and barriers.
extern "C" __global__ void __launch_bounds__(1024, 1) layernorm8(XT* __restrict__ x, const XT* __restrict__ residual, const T* __restrict__ w,
                                      const T* __restrict__ b, T* __restrict__ out, int d, float eps) {
  __shared__ float part[2][32];
  pdl_begin();  // DEPENDENT_LAUNCH (kernels.ts)
  const long long row = blockIdx.x;
  const int chunks = d / 8;
  XT* xr = x + row * d;
  Stored8<XT> xc[2];
  Stored8<T> wc[2];
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < 2; j++) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < chunks) {
      xc[j] = *reinterpret_cast<const Stored8<XT>*>(xr + 8 * c);
      wc[j] = *reinterpret_cast<const Stored8<T>*>(w + 8 * c);
      float v[8];
      unpack_stored8(xc[j], v);
      if (residual) {
        float r[8];
        load8(residual + row * d + 8 * c, r);
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] += r[e];
        store8(reinterpret_cast<XT*>(&xc[j]), v);  // rounded to XT as stored
        *reinterpret_cast<Stored8<XT>*>(xr + 8 * c) = xc[j];
        unpack_stored8(xc[j], v);
      }
#pragma unroll
      for (int e = 0; e < 8; e++) s += v[e];
    }
  }
  const float mean = block_sum_into(s, part[0]) / d;
  float q = 0.f;
#pragma unroll
  for (int j = 0; j < 2; j++) {
    if (threadIdx.x + j * blockDim.x < chunks) {
      float v[8];
      unpack_stored8(xc[j], v);
#pragma unroll
      for (int e = 0; e < 8; e++) { const float u = v[e] - mean; q += u * u; }
    }
  }
  const float rstd = rsqrtf(block_sum_into(q, part[1]) / d + eps);
#pragma unroll
  for (int j = 0; j < 2; j++) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < chunks) {
      float v[8], wv[8], bv[8], y[8];
      unpack_stored8(xc[j], v);
      unpack_stored8(wc[j], wv);
      if (b) load8(b + 8 * c, bv);
#pragma unroll
      for (int e = 0; e < 8; e++) y[e] = (v[e] - mean) * rstd * wv[e] + (b ? bv[e] : 0.f);
      store8(out + row * d + 8 * c, y);
    }
  }
}

// LayerNorm of the float32 stream from its row statistics (skinny_gemm.cu statsOut: per-16-column mean
// and M2), d % 16 == 0, 16-byte accesses as layernorm8: each warp merges the statistics itself
// (merge_row_stats), so there is no reduction over the row and no barrier.
extern "C" __global__ void layernorm_stats8(const float* __restrict__ x, const float2* __restrict__ stats, const T* __restrict__ w,
                                            const T* __restrict__ b, T* __restrict__ out, int d, float eps) {
  const long long row = blockIdx.x;
  const int chunks = d / 8;
  // The LayerNorm's weights are constants: loaded before the wait, so that after it only x and the
  // statistics are a round trip away.
  pdl_trigger();
  float wv[2][8], bv[2][8];
#pragma unroll
  for (int j = 0; j < 2; j++) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < chunks) {
      load8(w + 8 * c, wv[j]);
      if (b) load8(b + 8 * c, bv[j]);
    }
  }
  pdl_wait();  // DEPENDENT_LAUNCH (kernels.ts)
  float v[2][8];
#pragma unroll
  for (int j = 0; j < 2; j++) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < chunks) load8(x + row * d + 8 * c, v[j]);
  }
  float mean, rstd;
  merge_row_stats(stats + row * (d / 16), d / 16, d, eps, mean, rstd);
#pragma unroll
  for (int j = 0; j < 2; j++) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < chunks) {
      float y[8];
#pragma unroll
      for (int e = 0; e < 8; e++) y[e] = (v[j][e] - mean) * rstd * wv[j][e] + (b ? bv[j][e] : 0.f);
      store8(out + row * d + 8 * c, y);
    }
  }
}

// layernorm8's arithmetic, bit for bit, with a warp a row instead of a block: no shared memory, no barrier,
// several rows in flight on an SM (at the training shape, 16,384 rows of 2048, 2.67 against layernorm8's
// 2.32 TB/s right after a kernel wrote x, H100: bench/RESULTS-cuda-train.md). Rows of at most 8 KB (d·sizeof(X) ≤ 8192: the row stays in registers) and
// without the residual add (the launch keeps layernorm8 for those). LN_VW is layernorm8's warp count for
// this d (rowThreads8(d) / 32, at most 16 here, so each of its threads holds one chunk): lane l holds the
// chunks layernorm8's thread 32k + l holds, k < LN_VW, so each per-thread sum is the same, and
// row_sum below adds them in layernorm8's tree.
#ifndef LN_VW
#define LN_VW 8
#endif
// The smallest power of two ≥ LN_VW: row_sum pads with zero sums, as layernorm8's second level does.
#define LN_VW2 (LN_VW <= 1 ? 1 : LN_VW <= 2 ? 2 : LN_VW <= 4 ? 4 : LN_VW <= 8 ? 8 : 16)

// layernorm8's block_sum_into, on the LN_VW per-thread partial sums a[k] of virtual thread 32k + lane.
// Its first level, a warp_sum butterfly (xor 16, 8, …, 1) inside each virtual warp k, is done as a
// reduce-scatter: while a lane holds several k, it keeps half of them at each step and swaps the other
// half with its partner, so every addition is one that layernorm8's lanes do (v_l + v_{l^o}, the same
// two operands in the same order), in log2 steps rather than LN_VW butterflies. Then lane k < LN_VW gets
// warp k's sum and the warp adds those (zeros beyond) in warp_sum's order, as layernorm8's second level.
__device__ __forceinline__ float row_sum(float (&a)[LN_VW2]) {
  const int lane = threadIdx.x & 31;
  int held = LN_VW2;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    if (held > 1) {
      const int half = held / 2;
      const bool upper = lane & o;
#pragma unroll
      for (int i = 0; i < LN_VW2 / 2; i++) {
        if (i < half) {
          const float send = upper ? a[i] : a[i + half], keep = upper ? a[i + half] : a[i];
          a[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
        }
      }
      held = half;
    } else {
      a[0] += __shfl_xor_sync(0xffffffffu, a[0], o);
    }
  }
  // Lane L now holds the sum of virtual warp k(L), k's bits (high first) being L's bits 4, 3, … taken
  // at the steps that halved; the lane that holds warp k is the inverse of that map.
  int from = 0;
#pragma unroll
  for (int bit = LN_VW2 / 2, o = 16; bit > 0; bit >>= 1, o >>= 1) if (lane & bit) from |= o;
  const float w = __shfl_sync(0xffffffffu, a[0], from);
  return warp_sum(lane < LN_VW ? w : 0.f);
}

extern "C" __global__ void __launch_bounds__(256) layernorm_rows8(const XT* __restrict__ x, const T* __restrict__ w,
                                      const T* __restrict__ b, T* __restrict__ out, int rows, int d, float eps) {
  pdl_begin();  // DEPENDENT_LAUNCH (kernels.ts)
  const int lane = threadIdx.x & 31, chunks = d / 8;
  const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (row >= rows) return;
  const XT* xr = x + row * d;
  // Chunk lane + 32k is layernorm8's thread 32k + lane's (its only chunk: chunks ≤ its blockDim.x).
  Stored8<XT> xc[LN_VW];
#pragma unroll
  for (int k = 0; k < LN_VW; k++) if (lane + 32 * k < chunks) xc[k] = *reinterpret_cast<const Stored8<XT>*>(xr + 8 * (lane + 32 * k));
  // Each chunk's sum of f(value), in layernorm8's thread order, then over the row (row_sum's tree).
  auto rowSumOf = [&](auto f) {
    float a[LN_VW2];
#pragma unroll
    for (int k = 0; k < LN_VW2; k++) {
      float s = 0.f;
      if (k < LN_VW && lane + 32 * k < chunks) {
        float v[8];
        unpack_stored8(xc[k], v);
#pragma unroll
        for (int e = 0; e < 8; e++) s += f(v[e]);
      }
      a[k] = s;
    }
    return row_sum(a);
  };
  const float mean = rowSumOf([](float v) { return v; }) / d;
  const float rstd = rsqrtf(rowSumOf([&](float v) { const float u = v - mean; return u * u; }) / d + eps);
#pragma unroll
  for (int k = 0; k < LN_VW; k++) {
    const int c = lane + 32 * k;
    if (c < chunks) {
      float v[8], wv[8], bv[8], y[8];
      unpack_stored8(xc[k], v);
      load8(w + 8 * c, wv);
      if (b) load8(b + 8 * c, bv);
#pragma unroll
      for (int e = 0; e < 8; e++) y[e] = (v[e] - mean) * rstd * wv[e] + (b ? bv[e] : 0.f);
      store8(out + row * d + 8 * c, y);
    }
  }
}
