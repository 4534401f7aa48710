// Cross entropy over one block of rows of logits z [rows, vocab] (float32, already times the logit
// scale): one thread block a row. loss[r] = logsumexp(z_r) − z_r[target_r] (0 for target −1); with
// gradients, dz[r, j] = k·(softmax(z_r)_j − [j = target_r]) stored in T (0 for ignored rows), the
// gradient of the raw logits x·Wᵀ when k = lossScale·logitScale. One pass keeps a running (max, sum)
// per thread; a second writes dz.
extern "C" __global__ void cross_entropy_rows(const float* __restrict__ z, const int* __restrict__ targets, float* __restrict__ loss,
                                              T* __restrict__ dz, int vocab, float k, int gradients) {
  const int r = blockIdx.x;
  const float* zr = z + (long long)r * vocab;
  const int target = targets[r];
  T* dzr = dz + (long long)r * vocab;
  if (target < 0) {
    if (threadIdx.x == 0) loss[r] = 0.f;
    if (gradients) for (int j = threadIdx.x; j < vocab; j += blockDim.x) dzr[j] = st<T>(0.f);
    return;
  }
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
