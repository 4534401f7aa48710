// One AdamW step on float32 master weights and moments, in place, in torch.optim.AdamW's order:
//   p ← p·keep;  m ← β1·m + (1-β1)·g;  v ← β2·v + (1-β2)·g²;  p ← p − stepSize·m / (sqrt(v)/bc2Sqrt + eps)
// with keep = 1 − decay and stepSize = lr / (1 − β1^step), bc2Sqrt = sqrt(1 − β2^step) from the host.
// With COPY_BF16 (or COPY_F32) the compute copy is refreshed from the new master value in the same pass.
// gradScale (nullable, on the device): the gradient-clipping factor, multiplied into each gradient as it
// is read (rounded as scale_in_place would round it, so the step equals clipping first, then stepping)
// without a pass of its own and without the host reading the norm.
struct AdamwHyper { float stepSize, beta1, beta2, eps, keep, bc2Sqrt; };

__device__ __forceinline__ void adamw_one(float& p, float g, float& m, float& v, const AdamwHyper& h) {
  m = h.beta1 * m + (1.f - h.beta1) * g;
  v = h.beta2 * v + (1.f - h.beta2) * g * g;
  p = p * h.keep - h.stepSize * m / (sqrtf(v) / h.bc2Sqrt + h.eps);
}

__device__ __forceinline__ void store_copy(void* copy, long long i, float value) {
#if defined(COPY_BF16)
  reinterpret_cast<__nv_bfloat16*>(copy)[i] = __float2bfloat16_rn(value);
#elif defined(COPY_F32)
  reinterpret_cast<float*>(copy)[i] = value;
#endif
}

// The clipping factor, 1 without one (g·1 is g exactly).
__device__ __forceinline__ float grad_scale_of(const float* gradScale) { return gradScale ? *gradScale : 1.f; }

// Element i of one tensor, read, stepped and written back (with its compute copy).
__device__ __forceinline__ void adamw_element(float* param, const float* grad, float* m, float* v, void* copy, long long i, const AdamwHyper& h, float gs) {
  float p = param[i], mi = m[i], vi = v[i];
  adamw_one(p, __fmul_rn(grad[i], gs), mi, vi, h);
  m[i] = mi;
  v[i] = vi;
  param[i] = p;
  if (copy) store_copy(copy, i, p);
}

extern "C" __global__ void adamw_step(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m, float* __restrict__ v,
                                      float stepSize, float beta1, float beta2, float eps, float keep, float bc2Sqrt, long long n, void* copy,
                                      const float* __restrict__ gradScale) {
  const AdamwHyper h{stepSize, beta1, beta2, eps, keep, bc2Sqrt};
  const float gs = grad_scale_of(gradScale);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    adamw_element(param, grad, m, v, copy, i, h, gs);
  }
}

// All the parameters in one launch (torch's "foreach"/fused flavour): a table of tensors and a table
// of chunks (tensor index, chunk index within it); one block a chunk of ADAMW_CHUNK elements, four
// consecutive elements a thread with 16-byte accesses (8-byte for the bf16 copy). Every pointer is
// 16-byte aligned (the host checks); a tensor's last partial group of four is done one by one.
struct AdamwTensor { float* p; const float* g; float* m; float* v; void* copy; long long n; };
#ifndef ADAMW_CHUNK
#define ADAMW_CHUNK 4096
#endif

extern "C" __global__ void __launch_bounds__(256) adamw_multi(const AdamwTensor* __restrict__ tensors, const int2* __restrict__ chunks,
                                                            float stepSize, float beta1, float beta2, float eps, float keep, float bc2Sqrt,
                                                            const float* __restrict__ gradScale) {
  const AdamwHyper h{stepSize, beta1, beta2, eps, keep, bc2Sqrt};
  const float gs = grad_scale_of(gradScale);
  const int2 c = chunks[blockIdx.x];
  const AdamwTensor t = tensors[c.x];
  const long long start = (long long)c.y * ADAMW_CHUNK;
  const long long end = min(start + (long long)ADAMW_CHUNK, t.n);
  for (long long i = start + 4 * threadIdx.x; i < end; i += 4 * blockDim.x) {
    if (i + 4 <= end) {
      float4 p = *reinterpret_cast<const float4*>(t.p + i), m = *reinterpret_cast<const float4*>(t.m + i), v = *reinterpret_cast<const float4*>(t.v + i);
      const float4 g = __ldg(reinterpret_cast<const float4*>(t.g + i));
      adamw_one(p.x, __fmul_rn(g.x, gs), m.x, v.x, h);
      adamw_one(p.y, __fmul_rn(g.y, gs), m.y, v.y, h);
      adamw_one(p.z, __fmul_rn(g.z, gs), m.z, v.z, h);
      adamw_one(p.w, __fmul_rn(g.w, gs), m.w, v.w, h);
      *reinterpret_cast<float4*>(t.p + i) = p;
      *reinterpret_cast<float4*>(t.m + i) = m;
      *reinterpret_cast<float4*>(t.v + i) = v;
      if (t.copy) {
#if defined(COPY_BF16)
        __nv_bfloat162 lo = __floats2bfloat162_rn(p.x, p.y), hi = __floats2bfloat162_rn(p.z, p.w);
        uint2 packed;
        packed.x = *reinterpret_cast<unsigned*>(&lo);
        packed.y = *reinterpret_cast<unsigned*>(&hi);
        *reinterpret_cast<uint2*>(reinterpret_cast<__nv_bfloat16*>(t.copy) + i) = packed;
#elif defined(COPY_F32)
        *reinterpret_cast<float4*>(reinterpret_cast<float*>(t.copy) + i) = p;
#endif
      }
    } else {
      for (long long j = i; j < end; j++) adamw_element(t.p, t.g, t.m, t.v, t.copy, j, h, gs);
    }
  }
}
