// The stored dsᵀ (flash_backward_dkdv or flash_backward_dkdv_wgmma writes it, flash_backward_dq_stored
// reads it; included by both kernel files): per (batch, head) the causal (query tile qt, key tile kt ≤ qt)
// pairs of 64 × 64 in order qt(qt+1)/2 + kt. Inside a pair, 16 blocks of 16 keys × 16 queries, block (kb,
// qb) at (4·kb + qb)·DS_BLOCK elements, each kept as the dk/dv warp holds it: its A fragment (rows =
// keys), register r of lane l at r·64 + 2l. So a warp stores one register of all its lanes as 128
// contiguous bytes (whole sectors; a [key][query] row layout wrote 16-byte pieces of 8 rows a store), and
// each register's 64 values are an 8 × 8 matrix with 16-byte rows (lanes 4g..4g+3 hold row g), which
// ldmatrix.trans reads back as the A fragment of ds (rows = queries) without bank conflicts.
#define DS_BLOCK 256
#define DS_TILE 64
#define DS_TILE_BYTES (DS_TILE * DS_TILE * 2)  // one stored dsᵀ tile of bf16
__device__ __forceinline__ long long dsTile(int bh, int qt, int kt, int t) {
  const long long tiles = (long long)(t + DS_TILE - 1) / DS_TILE, pairs = tiles * (tiles + 1) / 2;
  return ((long long)bh * pairs + (long long)qt * (qt + 1) / 2 + kt) * DS_TILE * DS_TILE;
}

