// LayerNorm backward, per row of width n (mean and variance recomputed from x, as the forward has them):
//   x̂ = (x − mean)·rstd,  g = dy·w,  dx = rstd·(g − mean(g) − x̂·mean(g·x̂))
//   dw += Σ_rows dy·x̂,  db += Σ_rows dy
// A block takes rows blockIdx.x, blockIdx.x + gridDim.x, …; its share of dw and db gathers in shared
// memory (2n floats, dynamic) and goes to the float32 outputs (zeroed by the caller) with one atomic
// add a column per block, not one a row.
extern "C" __global__ void layernorm_backward(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w,
                                              T* __restrict__ dx, float* __restrict__ dw, float* __restrict__ db, int rows, int n, float eps) {
  extern __shared__ float part[];  // [0, n): dw, [n, 2n): db
  for (int i = threadIdx.x; i < 2 * n; i += blockDim.x) part[i] = 0.f;
  __syncthreads();
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + (long long)r * n;
    const T* dyr = dy + (long long)r * n;
    float s = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += ld(xr[i]);
    const float mean = block_sum(s) / n;
    float q = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) { const float c = ld(xr[i]) - mean; q += c * c; }
    const float rstd = rsqrtf(block_sum(q) / n + eps);
    float sg = 0.f, sgx = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float xh = (ld(xr[i]) - mean) * rstd, d = ld(dyr[i]), g = d * ld(w[i]);
      sg += g;
      sgx += g * xh;
      part[i] += d * xh;
      part[n + i] += d;
    }
    const float meanG = block_sum(sg) / n, meanGX = block_sum(sgx) / n;
    T* dxr = dx + (long long)r * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float xh = (ld(xr[i]) - mean) * rstd;
      dxr[i] = st<T>(rstd * (ld(dyr[i]) * ld(w[i]) - meanG - xh * meanGX));
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    atomicAdd(dw + i, part[i]);
    if (db) atomicAdd(db + i, part[n + i]);
  }
}
