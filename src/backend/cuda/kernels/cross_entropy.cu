// Cross entropy over one block of rows of logits z [rows, vocab] (already times the logit scale): one
// thread block a row. loss[r] = logsumexp(z_r) − z_r[target_r] (0 for target −1); with gradients,
// dz[r, j] = k·(softmax(z_r)_j − [j = target_r]) stored in T (0 for ignored rows), the gradient of the
// raw logits x·Wᵀ when k = lossScale·logitScale.
//
// The logits are of type T: bf16 under amp_bf16, as F.linear gives them under autocast and as the
// original code computes its float32 loss from them; float32 on the float32 path. The softmax and the
// loss are float32 either way. dz may be the same memory as z (written in place): every read of a row's
// logits comes before any write of its dz, so z and dz carry no __restrict__.

// A row whose target is −1 (not predicted) adds nothing: loss 0 and, with gradients, dz 0. True for such
// a row (the block then returns).
__device__ __forceinline__ bool ignored_row(int target, float* loss, T* dzr, int vocab, int gradients) {
  if (target >= 0) return false;
  if (threadIdx.x == 0) *loss = 0.f;
  if (gradients) for (int j = threadIdx.x; j < vocab; j += blockDim.x) dzr[j] = st<T>(0.f);
  return true;
}

// One pass keeps a running (max, sum) per thread; a second writes dz.
extern "C" __global__ void cross_entropy_rows(const T* z, const int* __restrict__ targets, float* __restrict__ loss,
                                              T* dz, int vocab, float k, int gradients) {
  const int r = blockIdx.x;
  const T* zr = z + (long long)r * vocab;
  const int target = targets[r];
  T* dzr = dz + (long long)r * vocab;
  if (ignored_row(target, loss + r, dzr, vocab, gradients)) return;
  // Read before the reductions' barriers: after them other threads overwrite the row with dz (in place).
  const float zTarget = threadIdx.x == 0 ? ld(zr[target]) : 0.f;
  float m = -INFINITY, s = 0.f;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float x = ld(zr[j]);
    if (x > m) { s = s * expf(m - x) + 1.f; m = x; }
    else s += expf(x - m);
  }
  const float M = block_max(m);
  const float S = block_sum(m == -INFINITY ? 0.f : s * expf(m - M));
  const float lse = M + logf(S);
  if (threadIdx.x == 0) loss[r] = lse - zTarget;
  if (!gradients) return;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float p = expf(ld(zr[j]) - lse);
    dzr[j] = st<T>(k * (j == target ? p - 1.f : p));
  }
}

// Four logits as floats from one 16-byte (float) or 8-byte (bf16) word.
#ifdef MPT_BF16
typedef uint2 T4;
#else
typedef float4 T4;
#endif
__device__ __forceinline__ void unpack4(const float4 v, float* x) { x[0] = v.x; x[1] = v.y; x[2] = v.z; x[3] = v.w; }
__device__ __forceinline__ void unpack4(const uint2 v, float* x) {
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v.y));
  x[0] = a.x; x[1] = a.y; x[2] = b.x; x[3] = b.y;
}

// The same for vocab % 4 == 0 with the row held in shared memory (vocab values of T, dynamic: 197 KB
// of float32 or 98.5 KB of bf16 for MPT's 50432): the logits are read from memory once, with streaming
// loads of four values, instead of once for (max, sum) and again for dz (a block of rows, ~50 MB, does
// not stay in L2 between the passes). One 1024-thread block a row.
extern "C" __global__ void __launch_bounds__(1024) cross_entropy_rows_smem(const T* z, const int* __restrict__ targets,
    float* __restrict__ loss, T* dz, int vocab, float k, int gradients) {
  extern __shared__ T4 row4[];
  const int r = blockIdx.x, n4 = vocab >> 2;
  const T4* zr = reinterpret_cast<const T4*>(z + (long long)r * vocab);
  const int target = targets[r];
  T* dzr = dz + (long long)r * vocab;
  if (ignored_row(target, loss + r, dzr, vocab, gradients)) return;
  float m = -INFINITY, s = 0.f;
  for (int j = threadIdx.x; j < n4; j += blockDim.x) {
    const T4 w = __ldcs(zr + j);
    row4[j] = w;
    float x[4];
    unpack4(w, x);
    const float mx = fmaxf(fmaxf(x[0], x[1]), fmaxf(x[2], x[3]));
    if (mx > m) { s *= expf(m - mx); m = mx; }
    s += expf(x[0] - m) + expf(x[1] - m) + expf(x[2] - m) + expf(x[3] - m);
  }
  // Its __syncthreads also makes the row in shared memory visible to all, and ends every read of z
  // before dz (possibly the same memory) is written.
  const float M = block_max(m);
  const float S = block_sum(m == -INFINITY ? 0.f : s * expf(m - M));
  const float lse = M + logf(S);
  if (threadIdx.x == 0) loss[r] = lse - ld(reinterpret_cast<const T*>(row4)[target]);
  if (!gradients) return;
  for (int j = threadIdx.x; j < n4; j += blockDim.x) {
    float p[4];
    unpack4(row4[j], p);
    for (int i = 0; i < 4; i++) p[i] = expf(p[i] - lse);
    const int t = target - 4 * j;
    if (t >= 0 && t < 4) p[t] -= 1.f;
#ifdef MPT_BF16
    const __nv_bfloat162 a = __floats2bfloat162_rn(k * p[0], k * p[1]), b = __floats2bfloat162_rn(k * p[2], k * p[3]);
    uint2 u;
    u.x = *reinterpret_cast<const unsigned*>(&a);
    u.y = *reinterpret_cast<const unsigned*>(&b);
    *reinterpret_cast<uint2*>(dzr + 4 * j) = u;
#else
    *reinterpret_cast<float4*>(dzr + 4 * j) = make_float4(k * p[0], k * p[1], k * p[2], k * p[3]);
#endif
  }
}
