// The row stride of dx in rows of x (n values): 1 is a contiguous [rows, n]; 3 writes into a column block of
// a [rows, 3n] buffer (the caller offsets the pointer): the QK LayerNorms' dq and dk beside dv for one Wqkv
// backward GEMM (training.ts). Only the store's address changes.
#ifndef LN_DX_WIDTHS
#define LN_DX_WIDTHS 1
#endif

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
    T* dxr = dx + (long long)r * (LN_DX_WIDTHS * n);
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

// A chunk of 8 values as stored (common.cuh Stored8): rows are held this way between passes.
typedef Stored8<T> Chunk;

// The same gradients for rows of width n % 8 == 0 with 16-byte accesses; dx + residual is written (the
// residual stream's gradient around the norm, when `residual` is not null) and dw (and db with LN_BIAS)
// go to partial[block, n] (and partial[gridDim.x + block, n]), which layernorm_dw_sum adds into the
// float32 accumulators: no atomics, deterministic. x, dy and the residual are read once, held in
// registers as stored; w once a block. LN_TEAM threads share a row (thread t owns chunks
// t, t + LN_TEAM, …: LN_CH of them, so its dw/db columns stay the same for every row and sum in
// registers), and LN_TEAMS teams make a block, each on its own rows: team k of block b takes rows
// b·LN_TEAMS + k, then + gridDim.x·LN_TEAMS, …. One team barrier a row (a named barrier of LN_TEAM
// threads, so the teams of a block never wait for each other): everything the row needs comes from one
// reduction of four sums taken around a shift K = x[row, 0] (so that Σu² − (Σu)²/n does not cancel):
//   u = x − K: Σu, Σu², Σg, Σg·u  (g = dy·w)  →  mean − K, rstd, mean(g), mean(g·x̂)
// The next row's x, dy (and residual) are loaded before this row's work, so a team keeps a row's loads
// in flight through its reduction and barrier. At the end the block's teams add their sums in
// team order into one partial row; layernorm_dw_sum adds the partials in block order: deterministic.
#ifndef LN_TEAM
#define LN_TEAM 256
#endif
#ifndef LN_TEAMS
#define LN_TEAMS 4
#endif
#ifndef LN_CH
#define LN_CH 1
#endif
#ifndef LN_MIN_BLOCKS
#define LN_MIN_BLOCKS 1
#endif
#define LN_TEAM_WARPS (LN_TEAM / 32)

// What one thread reads of a row: its chunks of x, dy and the residual as stored, and the shift.
struct LnRow {
  Chunk x[LN_CH], dy[LN_CH], res[LN_CH];
  float k;
};

__device__ __forceinline__ void ln_load_row(LnRow& a, const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ residual,
                                            long long r, int n, int t) {
  const long long o = r * n;
  a.k = ld(x[o]);
#pragma unroll
  for (int j = 0; j < LN_CH; j++) {
    const int c = t + LN_TEAM * j;
    if (c < (n >> 3)) {
      a.x[j] = *reinterpret_cast<const Chunk*>(x + o + 8 * c);
      a.dy[j] = *reinterpret_cast<const Chunk*>(dy + o + 8 * c);
      if (residual) a.res[j] = *reinterpret_cast<const Chunk*>(residual + o + 8 * c);
    }
  }
}

// The team's barrier: a named barrier of its LN_TEAM threads (ids 1…, 0 is __syncthreads'), or the warp.
// Barrier ids are immediates (a register id makes ptxas reserve all 16); LN_TEAMS ≤ 8.
template <int ID> __device__ __forceinline__ void ln_bar() { asm volatile("bar.sync %0, %1;" ::"n"(ID), "n"(LN_TEAM) : "memory"); }
__device__ __forceinline__ void ln_team_sync(int team) {
#if LN_TEAM == 32
  __syncwarp();
#elif LN_TEAMS == 1
  __syncthreads();
#else
  switch (team) {
    case 0: ln_bar<1>(); break;
    case 1: ln_bar<2>(); break;
#if LN_TEAMS > 2
    case 2: ln_bar<3>(); break;
    case 3: ln_bar<4>(); break;
#endif
#if LN_TEAMS > 4
    case 4: ln_bar<5>(); break;
    case 5: ln_bar<6>(); break;
    case 6: ln_bar<7>(); break;
    case 7: ln_bar<8>(); break;
#endif
  }
#endif
}

// A thread's running sums of dw (and, with LN_BIAS, db) for its chunks, over the rows it works.
struct LnSums {
  float dw[LN_CH][8];
#ifdef LN_BIAS
  float db[LN_CH][8];
#endif
};

// A chunk's share of a row's one reduction (both row kernels): u = x − k (k: the shift), g = dy·w, and
// Σu, Σu², Σg, Σg·u added into s.
__device__ __forceinline__ void ln_add_chunk(float4& s, const float (&v)[8], const float (&d)[8], const float (&wv)[8], float k) {
#pragma unroll
  for (int e = 0; e < 8; e++) {
    const float u = v[e] - k, g = d[e] * wv[e];
    s.x += u;
    s.y += u * u;
    s.z += g;
    s.w += g * u;
  }
}

// Both row kernels' start: the thread's chunks of the weight (read once, used for every row) and its dw
// (and db) sums at 0.
__device__ __forceinline__ void ln_begin_sums(Chunk (&wc)[LN_CH], LnSums& sums, const T* __restrict__ w, int t, int chunks) {
#pragma unroll
  for (int j = 0; j < LN_CH; j++) {
    if (t + LN_TEAM * j < chunks) wc[j] = *reinterpret_cast<const Chunk*>(w + 8 * (t + LN_TEAM * j));
#pragma unroll
    for (int e = 0; e < 8; e++) {
      sums.dw[j][e] = 0.f;
#ifdef LN_BIAS
      sums.db[j][e] = 0.f;
#endif
    }
  }
}

// The block's sums of dw (and db) into its partial row(s), for both row kernels: team 0 writes its own
// into the block's shared row `acc`, teams 1, 2, … add theirs in turn, the last one into `partial`
// (fixed order: deterministic).
__device__ __forceinline__ void ln_block_sums(const LnSums& sums, float* acc, float* __restrict__ partial, int team, int t, int chunks, int n) {
  for (int k = 0; k < LN_TEAMS; k++) {
    if (team == k) {
#pragma unroll
      for (int j = 0; j < LN_CH; j++) {
        const int c = t + LN_TEAM * j;
        if (c < chunks) {
#pragma unroll
          for (int e = 0; e < 8; e++) {
            const int i = 8 * c + e;
            const float sw = k == 0 ? sums.dw[j][e] : acc[i] + sums.dw[j][e];
            if (k == LN_TEAMS - 1) partial[(long long)blockIdx.x * n + i] = sw; else acc[i] = sw;
#ifdef LN_BIAS
            const float sb = k == 0 ? sums.db[j][e] : acc[n + i] + sums.db[j][e];
            if (k == LN_TEAMS - 1) partial[(long long)(gridDim.x + blockIdx.x) * n + i] = sb; else acc[n + i] = sb;
#endif
          }
        }
      }
    }
    if (LN_TEAMS > 1) __syncthreads();
  }
}

extern "C" __global__ void __launch_bounds__(LN_TEAM * LN_TEAMS, LN_MIN_BLOCKS) layernorm_backward_teams(const T* __restrict__ dy, const T* __restrict__ x,
    const T* __restrict__ w, const T* __restrict__ residual, T* __restrict__ dx, float* __restrict__ partial, int rows, int n, float eps) {
  extern __shared__ float acc[];  // [n] dw (and [n, 2n) db): the block's sums, team by team
#if LN_TEAM > 32
  __shared__ float4 red[LN_TEAMS][2][LN_TEAM_WARPS];  // per warp: Σu, Σu², Σg, Σg·u (two rows alternate)
  const int lane = threadIdx.x & 31, warp = (threadIdx.x % LN_TEAM) >> 5;
#endif
  const int team = threadIdx.x / LN_TEAM, t = threadIdx.x % LN_TEAM, chunks = n >> 3;
  const float inv_n = 1.f / n;
  LnSums sums;
  Chunk wc[LN_CH];
  ln_begin_sums(wc, sums, w, t, chunks);
  const long long stride = (long long)gridDim.x * LN_TEAMS;
  long long r = (long long)blockIdx.x * LN_TEAMS + team;
  LnRow a;
  if (r < rows) ln_load_row(a, dy, x, residual, r, n, t);
  for (int parity = 0; r < rows; r += stride, parity ^= 1) {
    LnRow b;  // the next row, in flight during this one
    if (r + stride < rows) ln_load_row(b, dy, x, residual, r + stride, n, t);
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int j = 0; j < LN_CH; j++) {
      if (t + LN_TEAM * j < chunks) {
        float v[8], d[8], wv[8];
        unpack_stored8(a.x[j], v);
        unpack_stored8(a.dy[j], d);
        unpack_stored8(wc[j], wv);
        ln_add_chunk(s, v, d, wv, a.k);
      }
    }
    s.x = warp_sum(s.x); s.y = warp_sum(s.y); s.z = warp_sum(s.z); s.w = warp_sum(s.w);
#if LN_TEAM > 32
    if (lane == 0) red[team][parity][warp] = s;
    ln_team_sync(team);
    s = red[team][parity][0];
#pragma unroll
    for (int i = 1; i < LN_TEAM_WARPS; i++) {
      const float4 p = red[team][parity][i];
      s.x += p.x; s.y += p.y; s.z += p.z; s.w += p.w;
    }
#endif
    const float mu = s.x * inv_n;  // mean − K
    const float rstd = rsqrtf(fmaxf(s.y * inv_n - mu * mu, 0.f) + eps);
    const float meanG = s.z * inv_n, meanGX = rstd * (s.w * inv_n - mu * meanG);
#pragma unroll
    for (int j = 0; j < LN_CH; j++) {
      const int c = t + LN_TEAM * j;
      if (c < chunks) {
        float v[8], d[8], wv[8], res[8], o[8];
        unpack_stored8(a.x[j], v);
        unpack_stored8(a.dy[j], d);
        unpack_stored8(wc[j], wv);
        if (residual) unpack_stored8(a.res[j], res);
#pragma unroll
        for (int e = 0; e < 8; e++) {
          const float h = (v[e] - a.k - mu) * rstd;
          o[e] = rstd * (d[e] * wv[e] - meanG - h * meanGX) + (residual ? res[e] : 0.f);
          sums.dw[j][e] += d[e] * h;
#ifdef LN_BIAS
          sums.db[j][e] += d[e];
#endif
        }
        store8(dx + r * (LN_DX_WIDTHS * n) + 8 * c, o);
      }
    }
    a = b;
  }
  ln_block_sums(sums, acc, partial, team, t, chunks, n);
}

// The same gradients with the rows fed through shared memory instead of registers:
// layernorm_backward_ring. Each thread copies its own chunks of x, dy (and, with LN_RES, the residual)
// LN_STAGES − 1 rows ahead with cp.async into its own slots of a ring of LN_STAGES stages, so a team keeps
// LN_STAGES − 1 rows in flight whatever its registers (the teams kernel above holds one, in registers);
// a thread reads only what it copied itself, so the ring needs no barrier and no mbarrier: cp.async's
// wait_group makes a thread's own copies visible to it. Rows, teams, the one reduction a row and the
// block's sums are as in layernorm_backward_teams, except the shift: each warp shifts by its own first
// value (lane 0's, by a shuffle: no thread reads another's slots), and the team's sums are moved to warp
// 0's shift when the warps' sums are added (Σ(x − K0) = Σu + c·d, Σ(x − K0)² = Σu² + 2dΣu + c·d²,
// Σg(x − K0) = Σgu + dΣg, with d = K_w − K0 and c the warp's count of values).
// Measured (H200, bf16 [16384, 2048], bench/RESULTS-cuda-train.md): both kernels are bound by their
// instructions, not by memory (without the residual, a quarter fewer bytes, the ring at 256 a team takes as
// long as with it; in the step, at the power cap's clocks, both take ~15% longer than alone), so smaller
// teams, which spread a row's reductions over more values a thread, win: at teams of 128 the ring takes
// 6.92 ms for a step's 97 calls alone (256 a team 7.89, the teams kernel 8.26) and 7.33–7.41 ms in the step
// against the teams kernel's 9.13–9.14. The default (training.ts lnKernel, lnRing).
#ifndef LN_STAGES
#define LN_STAGES 3
#endif
#ifdef LN_RES
#define LN_ARRAYS 3
#else
#define LN_ARRAYS 2
#endif
// 16-byte pieces of a chunk: 1 (bf16) or 2 (float); cp.async copies 16 bytes at most.
#define LN_PIECES ((int)(sizeof(Chunk) / 16))
// uint4 slots of one team's stage: [array][chunk j][piece][thread], a warp's accesses 512 contiguous bytes.
#define LN_STAGE_SLOTS (LN_ARRAYS * LN_CH * LN_PIECES * LN_TEAM)

__device__ __forceinline__ void ln_cp16(unsigned dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void ln_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void ln_cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// This thread's copies of row r into its slots of a stage (`stage`: the stage's slot 0 for this thread).
__device__ __forceinline__ void ln_copy_row(unsigned stage, const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ residual,
                                            long long r, int n, int t) {
  const long long o = r * n;
#pragma unroll
  for (int j = 0; j < LN_CH; j++) {
    const int c = t + LN_TEAM * j;
    if (c < (n >> 3)) {
#pragma unroll
      for (int a = 0; a < LN_ARRAYS; a++) {
        const T* src = (a == 0 ? x : a == 1 ? dy : residual) + o + 8 * c;
#pragma unroll
        for (int p = 0; p < LN_PIECES; p++) ln_cp16(stage + 16 * (((a * LN_CH + j) * LN_PIECES + p) * LN_TEAM), reinterpret_cast<const char*>(src) + 16 * p);
      }
    }
  }
}

// Chunk j of array a (0 x, 1 dy, 2 the residual) of this thread in a stage (`slots`: the stage's slot 0 for this thread).
__device__ __forceinline__ Chunk ln_slot(const uint4* slots, int a, int j) {
  Chunk c;
#pragma unroll
  for (int p = 0; p < LN_PIECES; p++) c.u[p] = slots[((a * LN_CH + j) * LN_PIECES + p) * LN_TEAM];
  return c;
}

extern "C" __global__ void __launch_bounds__(LN_TEAM * LN_TEAMS, LN_MIN_BLOCKS) layernorm_backward_ring(const T* __restrict__ dy, const T* __restrict__ x,
    const T* __restrict__ w, const T* __restrict__ residual, T* __restrict__ dx, float* __restrict__ partial, int rows, int n, float eps) {
  extern __shared__ uint4 ring[];  // [team][stage] LN_STAGE_SLOTS each, then (LN_TEAMS > 1) the block's dw (and db) sums
  float* acc = reinterpret_cast<float*>(ring + LN_TEAMS * LN_STAGES * LN_STAGE_SLOTS);
  const int lane = threadIdx.x & 31, warp = (threadIdx.x % LN_TEAM) >> 5;
#if LN_TEAM > 32
  __shared__ float4 red[LN_TEAMS][2][LN_TEAM_WARPS];  // per warp: Σu, Σu², Σg, Σg·u around its shift (two rows alternate)
  __shared__ float redk[LN_TEAMS][2][LN_TEAM_WARPS];  // the warp's shift K_w
#endif
  const int team = threadIdx.x / LN_TEAM, t = threadIdx.x % LN_TEAM, chunks = n >> 3;
  const float inv_n = 1.f / n;
  const uint4* mine = ring + team * LN_STAGES * LN_STAGE_SLOTS + t;
  const unsigned mineAt = (unsigned)__cvta_generic_to_shared(mine);
  LnSums sums;
  Chunk wc[LN_CH];
  ln_begin_sums(wc, sums, w, t, chunks);
  const long long stride = (long long)gridDim.x * LN_TEAMS;
  long long r = (long long)blockIdx.x * LN_TEAMS + team;
  // The first LN_STAGES − 1 rows into stages 0, 1, …; one commit group a row, empty past the last row,
  // so that wait_group's count stays the same in every turn.
#pragma unroll
  for (int k = 0; k < LN_STAGES - 1; k++) {
    if (r + k * stride < rows) ln_copy_row(mineAt + 16 * k * LN_STAGE_SLOTS, dy, x, residual, r + k * stride, n, t);
    ln_cp_commit();
  }
  for (int stage = 0, parity = 0; r < rows; r += stride, parity ^= 1, stage = stage + 1 == LN_STAGES ? 0 : stage + 1) {
    // The row LN_STAGES − 1 ahead goes into the stage the previous row used (this thread is done with it).
    const int ahead = stage == 0 ? LN_STAGES - 1 : stage - 1;
    if (r + (LN_STAGES - 1) * stride < rows) ln_copy_row(mineAt + 16 * ahead * LN_STAGE_SLOTS, dy, x, residual, r + (LN_STAGES - 1) * stride, n, t);
    ln_cp_commit();
    ln_cp_wait<LN_STAGES - 1>();  // this row's group has landed
    const uint4* slots = mine + stage * LN_STAGE_SLOTS;
    // The warp's shift: lane 0's first value (0 where the warp holds no chunk: its sums are 0).
    float kw = 0.f;
    if (t < chunks) {
      float v[8];
      unpack_stored8(ln_slot(slots, 0, 0), v);
      kw = v[0];
    }
    kw = __shfl_sync(0xffffffffu, kw, 0);
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int j = 0; j < LN_CH; j++) {
      if (t + LN_TEAM * j < chunks) {
        float v[8], d[8], wv[8];
        unpack_stored8(ln_slot(slots, 0, j), v);
        unpack_stored8(ln_slot(slots, 1, j), d);
        unpack_stored8(wc[j], wv);
        ln_add_chunk(s, v, d, wv, kw);
      }
    }
    s.x = warp_sum(s.x); s.y = warp_sum(s.y); s.z = warp_sum(s.z); s.w = warp_sum(s.w);
#if LN_TEAM > 32
    if (lane == 0) { red[team][parity][warp] = s; redk[team][parity][warp] = kw; }
    ln_team_sync(team);
    // The warps' sums moved to warp 0's shift K0 and added in warp order (every thread the same).
    const float k0 = redk[team][parity][0];
    s = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int i = 0; i < LN_TEAM_WARPS; i++) {
      const float4 p = red[team][parity][i];
      const float d = redk[team][parity][i] - k0;
      int c = 0;
#pragma unroll
      for (int j = 0; j < LN_CH; j++) c += min(max(chunks - LN_TEAM * j - 32 * i, 0), 32);
      const float cnt = 8.f * c;
      s.x += p.x + cnt * d;
      s.y += p.y + d * (2.f * p.x + cnt * d);
      s.z += p.z;
      s.w += p.w + d * p.z;
    }
#else
    const float k0 = kw;
#endif
    const float mu = s.x * inv_n;  // mean − K0
    const float rstd = rsqrtf(fmaxf(s.y * inv_n - mu * mu, 0.f) + eps);
    const float meanG = s.z * inv_n, meanGX = rstd * (s.w * inv_n - mu * meanG);
    const float off = (kw - k0) - mu;  // x − mean = (x − K_w) + off
#pragma unroll
    for (int j = 0; j < LN_CH; j++) {
      const int c = t + LN_TEAM * j;
      if (c < chunks) {
        float v[8], d[8], wv[8], o[8];
        unpack_stored8(ln_slot(slots, 0, j), v);
        unpack_stored8(ln_slot(slots, 1, j), d);
        unpack_stored8(wc[j], wv);
#ifdef LN_RES
        float res[8];
        unpack_stored8(ln_slot(slots, 2, j), res);
#endif
#pragma unroll
        for (int e = 0; e < 8; e++) {
          const float h = (v[e] - kw + off) * rstd;
          o[e] = rstd * (d[e] * wv[e] - meanG - h * meanGX);
#ifdef LN_RES
          o[e] += res[e];
#endif
          sums.dw[j][e] += d[e] * h;
#ifdef LN_BIAS
          sums.db[j][e] += d[e];
#endif
        }
        store8(dx + r * (LN_DX_WIDTHS * n) + 8 * c, o);
      }
    }
  }
  ln_cp_wait<0>();
  ln_block_sums(sums, acc, partial, team, t, chunks, n);
}

// dw[i] += Σ_b partial[b, i] over `blocks` block sums (and db[i] from the next `blocks` rows). A thread
// block takes 32 columns; its LN_SUM_WARPS warps sum every LN_SUM_WARPS-th block sum (warp s: s, s + W, …;
// beyond 8 warps four loads issued at a time), then warp 0 adds the W in order: fixed order, so
// deterministic. The partials were just written (L2): the time is load latency, hence many warps with few
// loads each: 32 for the ring kernel's 132 partials (0.53 ms for a step's 97 calls on the H200; the teams
// kernel's 256 over 8 warps 0.63 to 0.76 ms, bench/RESULTS-cuda-train.md). 8 warps: the loop as it was.
#ifndef LN_SUM_WARPS
#define LN_SUM_WARPS 8
#endif
extern "C" __global__ void layernorm_dw_sum(const float* __restrict__ partial, int blocks, int n, float* __restrict__ dw, float* __restrict__ db) {
  __shared__ float part[2][LN_SUM_WARPS][32];
  const int lane = threadIdx.x & 31, s = threadIdx.x >> 5, i = blockIdx.x * 32 + lane;
  float a = 0.f, c = 0.f;
  if (i < n) {
#if LN_SUM_WARPS > 8
#pragma unroll 4
#endif
    for (int b = s; b < blocks; b += LN_SUM_WARPS) {
      a += partial[(long long)b * n + i];
      if (db) c += partial[(long long)(blocks + b) * n + i];
    }
  }
  part[0][s][lane] = a;
  part[1][s][lane] = c;
  __syncthreads();
  if (s != 0 || i >= n) return;
  float ta = 0.f, tc = 0.f;
#pragma unroll
  for (int k = 0; k < LN_SUM_WARPS; k++) { ta += part[0][k][lane]; tc += part[1][k][lane]; }
  dw[i] += ta;
  if (db) db[i] += tc;
}
