// Choosing the next token on the GPU, one block of 1024 threads per row of logits.
// argmax_rows: the largest logit, the lowest index among ties (as torch.argmax).
// sample_rows: softmax(logits / temperature) restricted to the top-k (k > 0) and then to the smallest
// set of largest probabilities whose mass reaches top_p (top_p < 1), sampled with a uniform number made
// from (seed, row, step) by splitmix64. Thresholds are found by radix selection on order-preserving
// integer keys of the floats (4 passes of 8 bits), so nothing is sorted; ties at a threshold are kept.
// The token is the first index, in vocabulary order, where the running kept mass passes u·mass.
#define THREADS 1024

__device__ __forceinline__ unsigned order_key(float x) {
  unsigned u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

extern "C" __global__ void __launch_bounds__(THREADS) argmax_rows(const T* __restrict__ logits, int* __restrict__ out, int vocab, int rowStride) {
  pdl_begin();  // DEPENDENT_LAUNCH (kernels.ts)
  const T* x = logits + (long long)blockIdx.x * rowStride;
  float best = -INFINITY; int bi = 0x7fffffff;
  for (int i = threadIdx.x; i < vocab; i += THREADS) {
    float v = ld(x[i]);
    if (v > best) { best = v; bi = i; }  // increasing i: the first max stays
  }
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, best, o); int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
  }
  __shared__ float sv[32]; __shared__ int si[32];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) { sv[warp] = best; si[warp] = bi; }
  __syncthreads();
  if (warp == 0) {
    best = sv[lane]; bi = si[lane];
    for (int o = 16; o > 0; o >>= 1) {
      float ov = __shfl_xor_sync(0xffffffffu, best, o); int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
    }
    if (lane == 0) out[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
  }
}

__device__ __forceinline__ unsigned long long splitmix64(unsigned long long z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Radix-select the largest key P with weight(keys ≥ P) ≥ need, weight = 1 (count) or exp(x - m) (mass),
// among keys ≥ floor. Returns P (every thread).
__device__ unsigned radix_select(const T* x, int vocab, float invT, float m, unsigned floor, float need, bool mass) {
  __shared__ float hist[256];
  __shared__ unsigned prefixShared;
  __shared__ float needShared;
  unsigned prefix = 0;
  if (threadIdx.x == 0) needShared = need;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += THREADS) hist[d] = 0.f;
    __syncthreads();
    const unsigned highMask = shift == 24 ? 0u : (0xffffffffu << (shift + 8));
    for (int i = threadIdx.x; i < vocab; i += THREADS) {
      float v = ld(x[i]) * invT;
      unsigned key = order_key(v);
      if (key < floor || (key & highMask) != (prefix & highMask)) continue;
      atomicAdd(&hist[(key >> shift) & 255u], mass ? __expf(v - m) : 1.f);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float cum = 0.f, left = needShared; int chosen = -1, lowest = -1;
      for (int d = 255; d >= 0; d--) {
        if (hist[d] > 0.f) lowest = d;
        if (hist[d] > 0.f && cum + hist[d] >= left) { chosen = d; break; }
        cum += hist[d];
      }
      if (chosen < 0) chosen = lowest < 0 ? 0 : lowest;  // rounding left the need unmet: keep everything left
      needShared = left - cum;
      prefixShared = prefix | ((unsigned)chosen << shift);
    }
    __syncthreads();
    prefix = prefixShared;
  }
  return prefix;
}

extern "C" __global__ void __launch_bounds__(THREADS) sample_rows(const T* __restrict__ logits, int* __restrict__ out, int vocab,
    int rowStride, float temperature, int topK, float topP, unsigned long long seed, const int* stepDev, int stepHost) {
  pdl_begin();  // DEPENDENT_LAUNCH (kernels.ts)
  const int row = blockIdx.x;
  const T* x = logits + (long long)row * rowStride;
  const float invT = 1.f / temperature;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += THREADS) mx = fmaxf(mx, ld(x[i]) * invT);
  const float m = block_max(mx);

  unsigned floor = 0;
  if (topK > 0 && topK < vocab) floor = radix_select(x, vocab, invT, m, 0u, (float)topK, false);
  if (topP < 1.f) {
    float z = 0.f;
    for (int i = threadIdx.x; i < vocab; i += THREADS) { float v = ld(x[i]) * invT; if (order_key(v) >= floor) z += __expf(v - m); }
    z = block_sum(z);
    floor = radix_select(x, vocab, invT, m, floor, topP * z, true);
  }

  // Sum of kept mass per contiguous chunk, an exclusive scan over the chunks, and the chunk holding u·mass.
  const int chunk = (vocab + THREADS - 1) / THREADS;
  const int lo = threadIdx.x * chunk, hi = min(vocab, lo + chunk);
  float mine = 0.f; int lastKept = -1;
  for (int i = lo; i < hi; i++) { float v = ld(x[i]) * invT; if (order_key(v) >= floor) { mine += __expf(v - m); lastKept = i; } }
  __shared__ float scan[THREADS];
  __shared__ int chosen, fallback;
  scan[threadIdx.x] = mine;
  if (threadIdx.x == 0) { chosen = -1; fallback = -1; }
  __syncthreads();
  for (int o = 1; o < THREADS; o <<= 1) {  // Hillis-Steele inclusive scan, fixed order
    float add = threadIdx.x >= o ? scan[threadIdx.x - o] : 0.f;
    __syncthreads();
    scan[threadIdx.x] += add;
    __syncthreads();
  }
  const float total = scan[THREADS - 1];
  const int step = stepHost + (stepDev ? *stepDev : 0);
  const unsigned long long r = splitmix64(seed ^ splitmix64(((unsigned long long)row << 32) ^ (unsigned)step));
  const float target = (float)(r >> 40) * (1.f / 16777216.f) * total;
  const float before = scan[threadIdx.x] - mine;
  if (lastKept >= 0) atomicMax(&fallback, lastKept);
  if (mine > 0.f && target >= before && target < before + mine) {
    float cum = before; int pick = lastKept;
    for (int i = lo; i < hi; i++) {
      float v = ld(x[i]) * invT;
      if (order_key(v) < floor) continue;
      cum += __expf(v - m);
      if (cum > target) { pick = i; break; }
    }
    atomicCAS(&chosen, -1, pick);
  }
  __syncthreads();
  if (threadIdx.x == 0) out[row] = chosen >= 0 ? chosen : (fallback >= 0 ? fallback : 0);
}
