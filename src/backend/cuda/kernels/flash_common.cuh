// The small device helpers every flash attention kernel uses (flash_attention.cu, flash_backward.cu and
// their wgmma versions): asynchronous copies into shared memory, ldmatrix, the m16n8k16 tensor-core
// product, exp2 on the special-function unit, bf16 packing, and the block order by groups of heads.

// The row strides of the dk/dv kernels' dk and dv outputs (flash_backward.cu, flash_backward_wgmma.cu) in
// rows of q (nHeads·head size): 1 is a contiguous [batch, t, d]; 3 writes into a column block of a
// [batch·t, 3d] buffer (the caller offsets the pointer), so that dq, dk, dv sit side by side for one Wqkv
// backward GEMM (training.ts). Only the store's address changes.
#ifndef DKDV_DK_WIDTHS
#define DKDV_DK_WIDTHS 1
#endif
#ifndef DKDV_DV_WIDTHS
#define DKDV_DV_WIDTHS 1
#endif

// The ping-pong's named barriers between two consumer warpgroups of the fa3 kernels (256 threads: the
// waiting consumer's 128 and the other's arrivals; id 0 is __syncthreads'): wait for this consumer's
// turn (the other's arrival), hand the turn over.
__device__ __forceinline__ void turn_wait(int id) { asm volatile("bar.sync %0, 256;\n" :: "r"(id) : "memory"); }
__device__ __forceinline__ void turn_pass(int id) { asm volatile("bar.arrive %0, 256;\n" :: "r"(id) : "memory"); }

// 16 bytes global → shared (shared-window address), without L1; `valid` false writes zeros instead (rows
// past the end of a sequence read nothing out of bounds).
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  cp_async16((unsigned)__cvta_generic_to_shared(dst), src, valid);
}
// The same with an L2 cache policy (from createpolicy), e.g. evict_first for data read once.
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool valid, unsigned long long policy) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" :: "r"(dst), "l"(src), "r"(valid ? 16 : 0), "l"(policy) : "memory");
}
// Four 8 × 8 bf16 matrices from shared memory (shared-window address) into the mma.sync fragment layout
// (transposed with `trans`).
__device__ __forceinline__ void ldsm_x4(unsigned addr, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, bool trans) {
  if (trans) asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr) : "memory");
  else asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr) : "memory");
}
__device__ __forceinline__ void ldsm_x4(const void* p, unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, bool trans) {
  ldsm_x4((unsigned)__cvta_generic_to_shared(p), r0, r1, r2, r3, trans);
}
// c[16 × 8] += a[16 × 16] · b[16 × 8], bf16 operands, float accumulators.
__device__ __forceinline__ void mma16816(float* c, const unsigned* a, unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 2^x on the special-function unit (exp2f adds range handling the softmax never needs).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// Two floats rounded to bf16 and packed, lo in the low half (an mma/wgmma A-fragment register).
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<unsigned*>(&v);
}
// Block order by groups of heads, for a grid (batch·heads, tiles) whose blocks start in the order of the
// linear index (x fastest): the (batch, head) pairs are taken `group` at a time, each group's blocks
// together with its tile positions in order, so the blocks in flight read about `group` heads' operands,
// which stay in L2, and a kernel whose position 0 is its longest tile still starts those first (a short
// tail). `pos` is the block's position in that order (0 first), `bh` its (batch, head) pair.
__device__ __forceinline__ void grouped_block(int group, int& pos, int& bh) {
  const int nBH = gridDim.x, nPos = gridDim.y, linear = blockIdx.y * nBH + blockIdx.x;
  const int first = linear / (group * nPos) * group, r = linear % (group * nPos);
  const int inGroup = min(group, nBH - first);  // the last group may hold fewer heads
  pos = r / inGroup;
  bh = first + r % inGroup;
}
