// Cross entropy over one block of rows of logits z [rows, vocab] (float32, already times the logit
// scale): one thread block a row. loss[r] = logsumexp(z_r) − z_r[target_r] (0 for target −1); with
// gradients, dz[r, j] = k·(softmax(z_r)_j − [j = target_r]) stored in T (0 for ignored rows), the
// gradient of the raw logits x·Wᵀ when k = lossScale·logitScale.

// A row whose target is −1 (not predicted) adds nothing: loss 0 and, with gradients, dz 0. True for such
// a row (the block then returns).
__device__ __forceinline__ bool ignored_row(int target, float* loss, T* dzr, int vocab, int gradients) {
  if (target >= 0) return false;
  if (threadIdx.x == 0) *loss = 0.f;
  if (gradients) for (int j = threadIdx.x; j < vocab; j += blockDim.x) dzr[j] = st<T>(0.f);
  return true;
}

// One pass keeps a running (max, sum) per thread; a second writes dz.
extern "C" __global__ void cross_entropy_rows(const float* __restrict__ z, const int* __restrict__ targets, float* __restrict__ loss,
                                              T* __restrict__ dz, int vocab, float k, int gradients) {
  const int r = blockIdx.x;
  const float* zr = z + (long long)r * vocab;
  const int target = targets[r];
  T* dzr = dz + (long long)r * vocab;
  if (ignored_row(target, loss + r, dzr, vocab, gradients)) return;
  float m = -INFINITY, s = 0.f;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float x = zr[j];
    if (x > m) { s = s * expf(m - x) + 1.f; m = x; }
    else s += expf(x - m);
  }
  const float M = block_max(m);
  const float S = block_sum(m == -INFINITY ? 0.f : s * expf(m - M));
  const float lse = M + logf(S);
  if (threadIdx.x == 0) loss[r] = lse - zr[target];
  if (!gradients) return;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float p = expf(zr[j] - lse);
    dzr[j] = st<T>(k * (j == target ? p - 1.f : p));
  }
}

// The same for vocab % 4 == 0 with the row held in shared memory (vocab floats, dynamic; 197 KB for
// MPT's 50432): the logits are read from memory once, with 16-byte streaming loads, instead of once
// for (max, sum) and again for dz (a block of rows, ~50 MB, does not stay in L2 between the passes).
// One 1024-thread block a row, so one block an SM.
extern "C" __global__ void __launch_bounds__(1024) cross_entropy_rows_smem(const float* __restrict__ z, const int* __restrict__ targets,
    float* __restrict__ loss, T* __restrict__ dz, int vocab, float k, int gradients) {
  extern __shared__ float4 row4[];
  const int r = blockIdx.x, n4 = vocab >> 2;
  const float4* zr = reinterpret_cast<const float4*>(z + (long long)r * vocab);
  const int target = targets[r];
  T* dzr = dz + (long long)r * vocab;
  if (ignored_row(target, loss + r, dzr, vocab, gradients)) return;
  float m = -INFINITY, s = 0.f;
  for (int j = threadIdx.x; j < n4; j += blockDim.x) {
    const float4 x = __ldcs(zr + j);
    row4[j] = x;
    const float mx = fmaxf(fmaxf(x.x, x.y), fmaxf(x.z, x.w));
    if (mx > m) { s *= expf(m - mx); m = mx; }
    s += expf(x.x - m) + expf(x.y - m) + expf(x.z - m) + expf(x.w - m);
  }
  const float M = block_max(m);  // its __syncthreads also makes the row in shared memory visible to all
  const float S = block_sum(m == -INFINITY ? 0.f : s * expf(m - M));
  const float lse = M + logf(S);
  const float* row = reinterpret_cast<const float*>(row4);
  if (threadIdx.x == 0) loss[r] = lse - row[target];
  if (!gradients) return;
  for (int j = threadIdx.x; j < n4; j += blockDim.x) {
    const float4 x = row4[j];
    float p[4] = {expf(x.x - lse), expf(x.y - lse), expf(x.z - lse), expf(x.w - lse)};
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
