// One AdamW step on float32 master weights and moments, in place, in torch.optim.AdamW's order:
//   p ← p·keep;  m ← β1·m + (1-β1)·g;  v ← β2·v + (1-β2)·g²;  p ← p − stepSize·m / (sqrt(v)/bc2Sqrt + eps)
// with keep = 1 − decay and stepSize = lr / (1 − β1^step), bc2Sqrt = sqrt(1 − β2^step) from the host.
// With COPY_BF16 (or COPY_F32) the compute copy is refreshed from the new master value in the same pass.
extern "C" __global__ void adamw_step(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m, float* __restrict__ v,
                                      float stepSize, float beta1, float beta2, float eps, float keep, float bc2Sqrt, long long n, void* copy) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float g = grad[i];
    const float p = param[i] * keep;
    const float mi = beta1 * m[i] + (1.f - beta1) * g;
    const float vi = beta2 * v[i] + (1.f - beta2) * g * g;
    const float out = p - stepSize * mi / (sqrtf(vi) / bc2Sqrt + eps);
    m[i] = mi;
    v[i] = vi;
    param[i] = out;
#if defined(COPY_BF16)
    reinterpret_cast<__nv_bfloat16*>(copy)[i] = __float2bfloat16_rn(out);
#elif defined(COPY_F32)
    reinterpret_cast<float*>(copy)[i] = out;
#endif
  }
}
