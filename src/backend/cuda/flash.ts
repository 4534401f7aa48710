/**
 * Launches of the tensor-core flash attention kernels (kernels/flash_attention.cu, flash_forward_fa3.cu,
 * flash_backward.cu, flash_backward_wgmma.cu, flash_backward_dq_fa3.cu), shared by prefill (index.ts attentionInto) and training
 * (training.ts): one place knows each kernel's grid, block, shared memory and compile-time shape, and
 * which shape is the default.
 */
import { UserError } from '../../util/errors.js';
import type { KernelCache } from './kernels.js';
import { bf16RowsMaps, type Bf16Rows } from './tensor-map.js';

/**
 * A compile-time shape of flash_forward in flash_attention.cu (mma.sync, any chip): `mt` m16 tiles a
 * warp, `warps` a block, keys a tile, blocks an SM; `pipe`: the next tile's scores issued before this
 * tile's softmax; `headMajor`: a head's query tiles launched together (else the longest tiles of all
 * heads first).
 */
export interface FlashMmaShape { mt: 1 | 2; warps: 4 | 8; keys: 32 | 64; minBlocks: number; pipe?: boolean; headMajor?: boolean }

/**
 * A shape of flash_forward in flash_forward_fa3.cu (warpgroup MMA, sm_90a, head sizes 64 and 128),
 * warp-specialized as FlashAttention-3: a producer warpgroup filling a ring of K/V stages under
 * mbarriers and `warpgroups` consumer warpgroups of 64 query rows each, keys a tile, one block an SM.
 * Elsewhere `fallback` runs instead.
 */
export interface FlashWgmmaShape { wgmma: true; warpgroups: 2 | 3; keys: 64 | 128; fallback: FlashMmaShape; producer: FlashProducerRing }

/**
 * The ring of flash_forward_fa3.cu and its consumers' schedule: `stages` of K and V; `pingpong`: the
 * consumers take turns issuing their products; `headGroup`: blocks ordered by groups of that many
 * (batch, head) pairs, longest first inside a group, so that the K and V of the heads in flight stay in
 * L2 (0 or absent: longest first over all heads); `persistent`: one block an SM looping over the
 * (batch, head, query block) items in that order, dealt out by a ticket counter (FA3_PERSISTENT), the
 * next item's loads under this one's last tile and stores; a number caps the blocks (the tests use a
 * few, so that every block runs many items); `tma` (persistent shapes only): the producer's loads by
 * the TMA unit, one thread issuing a tensor-map copy a 64-column slab (FA3_TMA, flash_forward_tma;
 * tensor-map.ts), where the TMA unit can describe q, k and v (16-byte-aligned pointers and row strides:
 * else cp.async, as without).
 */
export interface FlashProducerRing { stages: number; pingpong?: boolean; headGroup?: number; persistent?: true | number; tma?: boolean }

export type FlashForwardShape = FlashMmaShape | FlashWgmmaShape;

/**
 * The mma.sync shapes that were the defaults before the wgmma kernels, and are their fallback (chips other
 * than sm_90a, head sizes other than 64 and 128). Training (batch × heads blocks of 2048 rows): 32 rows a
 * warp, Q in shared memory. Prefill (often one sequence: a grid of few blocks): 16 rows a warp, Q in
 * registers, software-pipelined.
 */
export const FLASH_TRAIN_MMA_SHAPE: FlashMmaShape = { mt: 2, warps: 4, keys: 64, minBlocks: 2 };
export const FLASH_PREFILL_SHAPE: FlashMmaShape = { mt: 1, warps: 4, keys: 64, minBlocks: 2, pipe: true };

/**
 * The default forward shape on sm_90a for prefill (and the base of training's), chosen on the H100 by
 * `node dist/src/bench/cuda-attention-bench.js --forward-only --variants` (the candidates side by side;
 * figures in bench/RESULTS-attention.md): flash_forward_fa3.cu with 2 consumer warpgroups (128 rows),
 * 128-key tiles, 3 stages, ping-pong between the consumers, heads in groups of 16 (0.406 ms for batch 8
 * with lse against 0.558 for mma.sync, 0.064 ms for one 2048-token prompt against 0.106). Persistent
 * blocks lost for one prompt (0.087–0.091 ms against 0.068–0.081 in the same process).
 */
const FA3_DEFAULT: Omit<FlashWgmmaShape, 'fallback'> = {
  wgmma: true, warpgroups: 2, keys: 128, producer: { stages: 3, pingpong: true, headGroup: 16 },
};
/**
 * The training forward on sm_90a before TMA: the same on persistent blocks, heads in groups of 32 (batch 8
 * with lse: 0.402–0.404 ms against 0.426–0.440 for FA3_DEFAULT in the same process; in the step 10.77
 * against 11.02 ms, bench/RESULTS-attention.md, session fwd4).
 */
const FA3_TRAIN_CP_ASYNC: Omit<FlashWgmmaShape, 'fallback'> = { ...FA3_DEFAULT, producer: { ...FA3_DEFAULT.producer, headGroup: 32, persistent: true } };
/**
 * The training forward on sm_90a: FA3_TRAIN_CP_ASYNC with the producer's loads by TMA (NVIDIA H200, session
 * tmaf, same process: 0.369–0.378 ms against 0.397–0.398; in the step 9.75–9.89 against 11.21–11.42 ms,
 * medians 259.7 / 261.0 against 261.2 / 261.4 ms, A B A B; bench/RESULTS-attention.md).
 */
const FA3_TRAIN_DEFAULT: Omit<FlashWgmmaShape, 'fallback'> = { ...FA3_TRAIN_CP_ASYNC, producer: { ...FA3_TRAIN_CP_ASYNC.producer, tma: true } };
export const FLASH_PREFILL_WGMMA_SHAPE: FlashWgmmaShape = { ...FA3_DEFAULT, fallback: FLASH_PREFILL_SHAPE };

/**
 * The prefill shape for a head size: the wgmma kernel where it can run (launchFlashForward), else the
 * mma.sync fallback, whose pipelined loop holds two tiles of scores (about 244 registers at head size
 * 128), so heads over 128 take the plain loop.
 */
export function flashPrefillShape(dHead: number): FlashWgmmaShape {
  const pipe = (FLASH_PREFILL_SHAPE.pipe ?? false) && dHead <= 128;
  return { ...FLASH_PREFILL_WGMMA_SHAPE, fallback: { ...FLASH_PREFILL_SHAPE, pipe } };
}

/** The shapes the benchmark compares and the tests check (the defaults among them). */
export const FLASH_FORWARD_SHAPES: readonly FlashForwardShape[] = [
  { mt: 1, warps: 4, keys: 64, minBlocks: 2 }, { mt: 1, warps: 4, keys: 64, minBlocks: 3 }, { mt: 1, warps: 4, keys: 32, minBlocks: 3 },
  { mt: 1, warps: 8, keys: 64, minBlocks: 1 }, { mt: 2, warps: 4, keys: 64, minBlocks: 2 }, { mt: 2, warps: 4, keys: 32, minBlocks: 2 },
  { mt: 1, warps: 4, keys: 64, minBlocks: 2, pipe: true }, { mt: 1, warps: 4, keys: 32, minBlocks: 3, pipe: true },
  { mt: 2, warps: 4, keys: 32, minBlocks: 2, pipe: true },
  { mt: 1, warps: 4, keys: 64, minBlocks: 2, headMajor: true }, { mt: 2, warps: 4, keys: 64, minBlocks: 2, headMajor: true },
  ...wgmmaShapes(),
];

/**
 * The training forward's shape: FA3_TRAIN_DEFAULT, and off sm_90a the training mma.sync shape.
 * $MPT_FLASH_TRAIN_SHAPE (an index into FLASH_FORWARD_SHAPES) picks another for an A/B measurement of
 * the training step.
 */
export const FLASH_TRAIN_SHAPE: FlashForwardShape = trainShapeFromEnv() ?? { ...FA3_TRAIN_DEFAULT, fallback: FLASH_TRAIN_MMA_SHAPE };

function trainShapeFromEnv(): FlashForwardShape | undefined {
  const text = process.env.MPT_FLASH_TRAIN_SHAPE;
  if (text === undefined || text === '') return undefined;
  const shape = FLASH_FORWARD_SHAPES[Number(text)];
  if (!/^\d+$/.test(text) || !shape) {
    throw new UserError(`MPT_FLASH_TRAIN_SHAPE: '${text}' is not an index of a forward shape (0 to ${FLASH_FORWARD_SHAPES.length - 1})`);
  }
  return 'wgmma' in shape ? { ...shape, fallback: FLASH_TRAIN_MMA_SHAPE } : shape;
}

/** Key columns each backward step works on at once (16, 32 or 64). */
export const FLASH_BACKWARD_CHUNK_DEFAULT = 64;

/** Whether the backward stores dsᵀ for dq (flashBackwardScratchElements) rather than recomputing it. */
export const FLASH_BACKWARD_STORED_DS = true;

/**
 * The warp-specialized shapes worth timing: the prefill default (index 11, the training default before
 * the persistent one: MPT_FLASH_TRAIN_SHAPE=11 for an A/B of the step), the runner-up for training (3
 * consumers of 64 rows, 64-key tiles: 160 registers a consumer leave no room for 128-key tiles of
 * scores), the training default before TMA (persistent, index 13: MPT_FLASH_TRAIN_SHAPE=13 for an A/B of
 * the step), and the training default (the same with TMA loads, index 14). Persistent with groups of 16
 * (0.408–0.412 ms) and with 3 consumers (0.423–0.425) lost to the persistent one and were dropped; TMA
 * loads without persistent blocks (the prefill default's shape with TMA) lost for one prompt on the H200
 * (0.079–0.084 ms against 0.066–0.070) and tied at batch 8 (0.407–0.409 against 0.411–0.414): dropped,
 * and TMA is for persistent shapes only.
 */
function wgmmaShapes(): FlashWgmmaShape[] {
  const fallback = FLASH_PREFILL_SHAPE;  // elsewhere the prefill's mma.sync shape runs
  return [
    { ...FA3_DEFAULT, fallback },
    { wgmma: true, warpgroups: 3, keys: 64, producer: { stages: 4, headGroup: 32 }, fallback },
    { ...FA3_TRAIN_CP_ASYNC, fallback },
    { ...FA3_TRAIN_DEFAULT, fallback },
  ];
}

/**
 * Persistent shapes on a handful of blocks, for the tests: each block runs many items, so the ring's
 * phases, Q's refill and the ping-pong's turns carry from item to item, and the ticket counter is put
 * back at the end of every launch (a test launches the same kernel many times). Not worth timing.
 */
export const FLASH_FORWARD_TEST_SHAPES: readonly FlashWgmmaShape[] = [
  { ...FA3_DEFAULT, producer: { ...FA3_DEFAULT.producer, persistent: 5 }, fallback: FLASH_PREFILL_SHAPE },
  { wgmma: true, warpgroups: 3, keys: 64, producer: { stages: 4, pingpong: true, headGroup: 32, persistent: 3 }, fallback: FLASH_PREFILL_SHAPE },
  // The same with TMA loads: Q boxes of 128 and 192 rows, K/V boxes of 128 and 64, the ring's phases
  // and Q's refill (its expect_tx arrival doubling as the item's publication) from item to item.
  { ...FA3_DEFAULT, producer: { ...FA3_DEFAULT.producer, persistent: 5, tma: true }, fallback: FLASH_PREFILL_SHAPE },
  { wgmma: true, warpgroups: 3, keys: 64, producer: { stages: 4, pingpong: true, headGroup: 32, persistent: 3, tma: true }, fallback: FLASH_PREFILL_SHAPE },
];


/** A one-line description of a shape (benchmark rows, test messages). */
export function flashShapeLabel(s: FlashForwardShape): string {
  if ('wgmma' in s) {
    return `fa3, producer + ${s.warpgroups} consumer warpgroups (${s.warpgroups * 64} rows), ${s.keys}-key tiles, `
      + `${s.producer.stages} stages${s.producer.pingpong ? ', ping-pong' : ''}`
      + `${s.producer.headGroup ? `, heads in groups of ${s.producer.headGroup}` : ''}`
      + `${s.producer.persistent === true ? ', persistent' : s.producer.persistent ? `, persistent on ${s.producer.persistent} blocks` : ''}`
      + `${s.producer.tma ? ', TMA loads' : ''}`;
  }
  return `${s.mt * 16} rows a warp, ${s.warps} warps, ${s.keys}-key tiles, ${s.minBlocks} blocks/SM`
    + `${s.pipe ? ', pipelined' : ''}${s.headMajor ? ', head-major grid' : ''}`;
}

export interface FlashForwardArgs {
  q: number; k: number; v: number; mask: number; slopes: number; out: number; lse: number;
  batch: number; nHeads: number; dHead: number; tq: number; capacity: number; kvLen: number;
  qStride: number; kvStride: number; oStride: number; scale: number;
}

function rowBytes(dHead: number): number {
  return (dHead + 8) * 2;
}

/**
 * Shared memory of flash_forward. mma.sync: two stages of K and V tiles (rows padded by 8), and the
 * block's Q rows when mt = 2. fa3: Q, the ring's stages of K and V (unpadded, swizzled), and 1 KB to
 * align the base to the swizzle atom (the mbarriers are static shared memory).
 */
export function flashForwardSharedBytes(dHead: number, s: FlashForwardShape): number {
  if ('wgmma' in s) return (64 * s.warpgroups + s.producer.stages * 2 * s.keys) * dHead * 2 + 1024;
  const qRows = s.mt > 1 ? s.warps * 16 * s.mt : 0;
  return (2 * 2 * s.keys + qRows) * rowBytes(dHead);
}

/**
 * Whether the wgmma kernels (flash_forward_fa3.cu, flash_backward_wgmma.cu) can run for this head
 * size on this device: sm_90a (the Hopper-only instructions) and a head of 64 or 128 (whole 128-byte
 * swizzle rows, one wgmma N).
 */
export function wgmmaUsable(kernels: KernelCache, dHead: number): boolean {
  return (dHead === 64 || dHead === 128) && kernels.architecture() === 'sm_90a';
}

/** Causal (ALiBi or not, left-padding mask or not) attention forward on the tensor cores; lse optional. */
export function launchFlashForward(kernels: KernelCache, a: FlashForwardArgs, shape: FlashForwardShape): void {
  let s = shape;
  if ('wgmma' in s) {
    if (wgmmaUsable(kernels, a.dHead)) {
      if (s.producer.tma && s.producer.persistent === undefined) throw new Error(`flash forward: TMA loads need a persistent shape (${flashShapeLabel(s)})`);
      const maps = s.producer.tma ? flashForwardMaps(a, s) : undefined;
      const defs = {
        MPT_BF16: true, HEAD_DIM: a.dHead, FA3_CONSUMERS: s.warpgroups, FA3_BK: s.keys, FA3_STAGES: s.producer.stages,
        FA3_PINGPONG: s.producer.pingpong ?? false,
        FA3_GROUP: s.producer.headGroup ?? 0,
        FA3_PERSISTENT: s.producer.persistent !== undefined,
        FA3_TMA: maps !== undefined,
      };
      const args = [a.q, a.k, a.v, a.mask, a.slopes, a.out, a.lse, a.tq, a.capacity, a.kvLen, a.qStride, a.kvStride, a.oStride, a.nHeads, a.scale];
      const pairs = a.batch * a.nHeads, queryBlocks = Math.ceil(a.tq / (64 * s.warpgroups));
      const block = [128 * (s.warpgroups + 1)], shared = flashForwardSharedBytes(a.dHead, s);
      const persistent = s.producer.persistent;
      if (maps && persistent !== undefined) {  // persistent, `batch` and the maps last
        kernels.get('flash_forward_fa3.cu', 'flash_forward_tma', defs).launch([persistentBlocks(kernels, pairs * queryBlocks, persistent)], block,
          [...args, a.batch, maps.q, maps.k, maps.v], shared);
      } else if (persistent !== undefined) {  // at most one block an SM, never more blocks than work items
        kernels.get('flash_forward_fa3.cu', 'flash_forward_persistent', defs).launch([persistentBlocks(kernels, pairs * queryBlocks, persistent)], block, [...args, a.batch], shared);
      } else {
        kernels.get('flash_forward_fa3.cu', 'flash_forward', defs).launch([pairs, queryBlocks], block, args, shared);
      }
      return;
    }
    s = s.fallback;
  }
  // mt = 2 holds 2 × 64 accumulators a thread: anything below 255 registers would spill.
  const minBlocks = s.mt > 1 ? Math.min(s.minBlocks, 2) : s.minBlocks;
  const defs = {
    MPT_BF16: true, HEAD_DIM: a.dHead, FLASH_MT: s.mt, FLASH_WARPS: s.warps, FLASH_BK: s.keys, FLASH_MIN_BLOCKS: minBlocks,
    FLASH_PIPE: s.pipe ?? false, FLASH_HEAD_MAJOR: s.headMajor ?? false,
  };
  const tiles = Math.ceil(a.tq / (s.warps * 16 * s.mt));
  kernels.get('flash_attention.cu', 'flash_forward', defs).launch(
    s.headMajor ? [tiles, a.batch * a.nHeads] : [a.batch * a.nHeads, tiles], [s.warps * 32],
    [a.q, a.k, a.v, a.mask, a.slopes, a.out, a.lse, a.tq, a.capacity, a.kvLen, a.qStride, a.kvStride, a.oStride, a.nHeads, a.scale],
    flashForwardSharedBytes(a.dHead, s));
}

/**
 * The tensor maps of flash_forward_tma (FA3_TMA): Q as [batch] × tq rows, K and V as [batch] × kvLen rows
 * of a [batch, capacity] cache (rows past the end read as zeros), nHeads·dHead columns each, boxes of the
 * block's query rows and of a key tile. undefined where the TMA unit cannot describe one of them
 * (tmaDescribable: a pointer or a row stride not a multiple of 16 bytes); the cp.async kernel runs then.
 */
function flashForwardMaps(a: FlashForwardArgs, s: FlashWgmmaShape): { q: Uint8Array; k: Uint8Array; v: Uint8Array } | undefined {
  const columns = a.nHeads * a.dHead;
  const q: Bf16Rows = { address: a.q, columns, rows: a.tq, batch: a.batch, rowStride: a.qStride, batchStride: a.tq * a.qStride, boxRows: 64 * s.warpgroups };
  const kv = (address: number): Bf16Rows => ({ address, columns, rows: a.kvLen, batch: a.batch, rowStride: a.kvStride, batchStride: a.capacity * a.kvStride, boxRows: s.keys });
  const maps = bf16RowsMaps([q, kv(a.k), kv(a.v)]);
  return maps && { q: maps[0], k: maps[1], v: maps[2] };
}

export interface FlashBackwardArgs {
  q: number; k: number; v: number; dOut: number; lse: number; D: number; slopes: number;
  dq: number; dk: number; dv: number; batch: number; t: number; nHeads: number; dHead: number; scale: number;
  /** bf16 scratch of flashBackwardScratchElements: dk/dv store dsᵀ there and dq reads it; 0: dq recomputes S and dP. */
  ds?: number;
  /**
   * The row strides of dk and dv in rows of q (nHeads·dHead; default 1, contiguous): 3 when `dk` / `dv`
   * point into a column block of a [batch·t, 3·d] buffer (training.ts, the fused Wqkv backward). A
   * compile-time define of the dk/dv kernels (DKDV_DK_WIDTHS, DKDV_DV_WIDTHS), absent at 1.
   */
  dkWidths?: number;
  dvWidths?: number;
}

/** A persistent grid's blocks: one an SM (`true`) or the given count, never more than the work items. */
function persistentBlocks(kernels: KernelCache, items: number, persistent: true | number): number {
  return Math.min(items, persistent === true ? kernels.multiprocessors() : persistent);
}

/** The dk/dv kernels' defines for the output strides of `a` (none for contiguous outputs: the default cubins). */
export function dkdvStrideDefines(a: Pick<FlashBackwardArgs, 'dkWidths' | 'dvWidths'>): Record<string, number | false> {
  const widths = (w: number | undefined, name: string) => {
    if (w !== undefined && (!Number.isInteger(w) || w < 1)) throw new Error(`launchFlashBackward: ${name} ${w} is not a whole number of rows`);
    return w !== undefined && w !== 1 ? w : false;
  };
  return { DKDV_DK_WIDTHS: widths(a.dkWidths, 'dkWidths'), DKDV_DV_WIDTHS: widths(a.dvWidths, 'dvWidths') };
}

/** Where the backward's row term D = dO·O is made: dOut and out [batch·t, nHeads·dHead] (bf16 or float32), D [batch, nHeads, t] float32. */
export interface RowDotArgs { dOut: number; out: number; D: number; batch: number; t: number; nHeads: number; dHead: number }

/**
 * D[b, h, i] = dO_i·o_i over a head's dimensions, the backward pass's row term. 'vector':
 * attention_row_dot8, dHead / 8 lanes a (row, head) with 16-byte loads, where dHead / 8 is a power of two
 * ≤ 32 and both inputs are 16-byte aligned; 'scalar' (and the fallback): attention_row_dot, a warp a
 * (row, head) reading a value a lane a pass. The two sum in different orders (D's last bits differ).
 */
export function launchRowDot(kernels: KernelCache, bf16: boolean, a: RowDotArgs, kernel: 'vector' | 'scalar' = 'vector'): void {
  const pairs = a.batch * a.t * a.nHeads, lanes = a.dHead / 8;
  const vector = kernel === 'vector' && Number.isInteger(lanes) && lanes <= 32 && (lanes & (lanes - 1)) === 0 && a.dOut % 16 === 0 && a.out % 16 === 0;
  const args = [a.dOut, a.out, a.D, a.batch, a.t, a.nHeads, a.dHead];
  if (vector) kernels.get('flash_attention.cu', 'attention_row_dot8', { MPT_BF16: bf16 }).launch([Math.ceil(pairs * lanes / 256)], [256], [...args, lanes]);
  else kernels.get('flash_attention.cu', 'attention_row_dot', { MPT_BF16: bf16 }).launch([Math.ceil(pairs / 8)], [256], args);
}

/**
 * bf16 elements of the dsᵀ scratch: a 64 × 64 tile per causal (query tile, key tile) pair of each
 * (batch, head) — 553 MB at batch 8, 16 heads, t = 2048 — used by one layer's backward at a time.
 */
export function flashBackwardScratchElements(batch: number, nHeads: number, t: number): number {
  const tiles = Math.ceil(t / 64);
  return batch * nHeads * (tiles * (tiles + 1) / 2) * 64 * 64;
}

/**
 * Which dk/dv kernel runs: 'mma' (flash_backward_dkdv, mma.sync, any chip and head size a multiple of
 * 16) or the wgmma kernel (flash_backward_dkdv_wgmma, warpgroup MMA: sm_90a only, heads of 64 or 128)
 * on one of three grids: 'wgmma' (batch·nHeads, key tiles: the blocks in flight span every head) or
 * 'wgmma-head-major' (key tiles, batch·nHeads: a head's blocks together, so the Q and dO tiles they all
 * read stay in L2); or 'fa3' / 'fa3-sS-gG' / 'fa3-sS-gG-pp' / 'fa3-sS-gG-pp1' (flash_backward_dkdv_fa3,
 * warp-specialized: fa3DkdvShape).
 * (A grid of G heads at a time for the wgmma kernel tied with head-major at G = 16 and lost at G = 8:
 * bench/RESULTS-attention.md, sixth session; deleted.) All write the same dsᵀ layout, so the dq pass is the same, and the same bits.
 */
export type FlashDkdvKernel = 'mma' | 'wgmma' | 'wgmma-head-major' | 'fa3' | `fa3-s${number}-g${number}${'' | `-pp${'' | '1'}`}${'' | '-tma'}`;

/** A shape of flash_backward_dkdv_fa3 (fa3DkdvShape). */
export interface Fa3DkdvShape { stages: number; headGroup: number; pingpong?: 1 | 2; tma?: true }

/**
 * The shape of flash_backward_dkdv_fa3 (flash_backward_wgmma.cu: a producer warpgroup and two consumer
 * warpgroups of 64 keys sharing a ring of Q/dO stages): 'fa3' is FA3_DKDV_DEFAULT, 'fa3-sS-gG' S stages
 * (2 to 4) and blocks taken G heads at a time (1: head by head); a suffix '-pp' has the two consumers take
 * turns issuing their products, two turns a tile (Sᵀ and dPᵀ; dV and dK), '-pp1' one turn a tile (Sᵀ
 * and dPᵀ): `pingpong` = turns a tile (FB_PINGPONG; 0 or absent: off); then a suffix '-tma': K, V, Q
 * and dO loaded by the TMA unit (FB_TMA, flash_backward_dkdv_fa3_tma). undefined: not an fa3 name.
 */
export function fa3DkdvShape(name: string): Fa3DkdvShape | undefined {
  if (name === 'fa3') return FA3_DKDV_DEFAULT;
  const m = /^fa3-s([2-4])-g([1-9]\d*)(-pp1?)?(-tma)?$/.exec(name);
  if (!m) return undefined;
  const shape: Fa3DkdvShape = { stages: Number(m[1]), headGroup: Number(m[2]) };
  if (m[3]) shape.pingpong = m[3] === '-pp' ? 2 : 1;
  if (m[4]) shape.tma = true;
  return shape;
}
// 3 stages, heads in groups of 16, one ping-pong turn a tile: the fastest in both rounds of the seventh
// session's first call (H100, bench/RESULTS-attention.md: 0.674 / 0.671 ms against 0.768 / 0.734 for the
// same shape without ping-pong and 0.680-0.740 for two turns or 4 stages).
// With K, V, Q and dO by TMA since session tmaf (NVIDIA H200, same process: 0.659 / 0.663 ms against 0.721 /
// 0.721 for the same shape on cp.async, the same bits; in the step 17.49 / 17.57 against 20.12 / 20.08 ms,
// medians 256.7 / 254.8 against 258.6 / 259.3 ms, A B A B). 'fa3-s3-g16-pp1' names the cp.async one (A/B).
const FA3_DKDV_DEFAULT: Fa3DkdvShape = { stages: 3, headGroup: 16, pingpong: 1, tma: true };

/**
 * The tensor maps of flash_backward_dkdv_fa3_tma (FB_TMA): q, k, v and dO as [batch] × t rows of nHeads·dHead
 * columns (rows past t read as zeros), boxes of 64 rows. undefined where the TMA unit cannot describe them
 * (a pointer not 16-byte aligned): the cp.async kernel runs then.
 */
function dkdvMaps(a: FlashBackwardArgs): Uint8Array[] | undefined {
  const columns = a.nHeads * a.dHead;
  const rows = (address: number): Bf16Rows => ({ address, columns, rows: a.t, batch: a.batch, rowStride: columns, batchStride: a.t * columns, boxRows: 64 });
  return bf16RowsMaps([a.q, a.k, a.v, a.dOut].map(rows));
}

/** Shared memory of flash_backward_dkdv_fa3: K and V of 128 keys, the stages' Q and dO tiles and their lse and D, 1 KB to align. */
export function flashFa3DkdvSharedBytes(dHead: number, stages: number): number {
  return (4 + 2 * stages) * 64 * dHead * 2 + stages * 2 * 64 * 4 + 1024;
}

/**
 * The dk/dv kernel launchFlashBackward uses by default where the wgmma kernels run (sm_90a): for heads of
 * 128 the warp-specialized kernel (flash_backward_dkdv_fa3, FA3_DKDV_DEFAULT, its loads by TMA:
 * flash_backward_dkdv_fa3_tma; H100, bench/RESULTS-attention.md section bwd3: 0.680 / 0.726 ms against
 * 0.871 / 0.863 for wgmma on the head-major grid, same process; 20.24 against 22.72 ms in a step, same
 * call; TMA: section tmaf); for heads of 64 (not timed with fa3) wgmma on the head-major
 * grid (0.762 / 0.807 ms against 0.831 / 0.839 for the other grid). MPT_CUDA_DKDV picks another (A/B):
 * mma, wgmma, wgmma-head-major, fa3, fa3-sS-gG, fa3-sS-gG-pp or fa3-sS-gG-pp1, each fa3 shape optionally with -tma.
 */
export function flashDkdvDefault(kernels: KernelCache, dHead: number): FlashDkdvKernel {
  const choice = process.env.MPT_CUDA_DKDV ?? '';
  const known = choice === 'mma' || choice === 'wgmma' || choice === 'wgmma-head-major' || fa3DkdvShape(choice) !== undefined;
  // A bad name is an error on every chip (as MPT_CUDA_DQ's), not only where the wgmma kernels run.
  if (choice !== '' && !known) throw new UserError(`MPT_CUDA_DKDV: '${choice}' is not a dk/dv kernel (mma, wgmma, wgmma-head-major, fa3, fa3-sS-gG, fa3-sS-gG-pp, fa3-sS-gG-pp1, each fa3 shape optionally with -tma)`);
  if (!wgmmaUsable(kernels, dHead)) return 'mma';
  if (choice !== '') return choice as FlashDkdvKernel;
  return dHead === 128 ? 'fa3' : 'wgmma-head-major';
}

/** Shared memory of flash_backward_dkdv_wgmma: K, V, 2 stages of Q, dO (64 rows each), 2 stages of lse and D, 1 KB to align. */
export function flashWgmmaDkdvSharedBytes(dHead: number): number {
  return 6 * 64 * dHead * 2 + 4 * 64 * 4 + 1024;
}

/**
 * Which pass computes dq from the stored dsᵀ: 'mma' (flash_backward_dq_stored, mma.sync, any chip),
 * 'wgmma' (flash_backward_dq_wgmma: sm_90a, heads of 64 or 128; head-major grid, 128 queries a block, 3
 * stages, dsᵀ evict-first; on the H100 0.265 ms against 0.374-0.388 for mma, bench/RESULTS-attention.md)
 * or the warp-specialized flash_backward_dq_fa3 (same chips and heads): 'fa3' (FA3_DQ_DEFAULT) or a
 * shape by name, fa3DqShape. All read the same scratch and sum the same products in the same order: the
 * same bits.
 */
export type FlashDqKernel = 'mma' | 'wgmma' | 'fa3' | `fa3-c${number}-t${number}-s${number}${'' | `-g${number}` | `-p${'' | number}`}${'' | '-r'}`;

/**
 * A shape of flash_backward_dq_fa3 (kernels/flash_backward_dq_fa3.cu: a producer warpgroup filling a ring
 * of (K tile, dsᵀ tiles) stages, `consumers` warpgroups of `tiles` 64-query tiles each, one block an SM):
 * `stages` of the ring; `headGroup`: blocks ordered by groups of that many heads, longest first inside a
 * group (1: head by head, the head-major order of the wgmma pass); `persistent`: one block an SM looping
 * over the work items, head by head (a number caps the blocks: the tests use a few, so that every block
 * runs many items); `reverse`: the (batch, head) pairs from the last, whose dsᵀ the dk/dv kernel wrote
 * last (it takes the heads in order) and may have left in L2.
 */
export interface FlashFa3DqShape { consumers: 2 | 3; tiles: 1 | 2; stages: number; headGroup: number; persistent?: true | number; reverse?: true }

// The fastest fa3 shape alone on the H100 (seventh session, dq4: 0.274 / 0.272 ms against 0.274 / 0.270 for the
// wgmma pass, same process; bench/RESULTS-attention.md): 2 consumers of 2 query tiles, 4 stages, head by head.
const FA3_DQ_DEFAULT: FlashFa3DqShape = { consumers: 2, tiles: 2, stages: 4, headGroup: 1 };

/** Shared memory of flash_backward_dq_fa3: the stages' K tile and consumers·tiles dsᵀ tiles of 64 × 64, 1 KB to align. */
export function flashFa3DqSharedBytes(dHead: number, s: FlashFa3DqShape): number {
  return s.stages * (64 * dHead * 2 + s.consumers * s.tiles * 64 * 64 * 2) + 1024;
}

/**
 * The fa3 dq shape of a name: 'fa3' (FA3_DQ_DEFAULT) or 'fa3-cC-tT-sS' (C consumers of T query tiles, S
 * stages, head by head), then optionally '-gG' (blocks by groups of G heads) or '-p' / '-pN' (persistent,
 * on every SM / on N blocks), then optionally '-r' (the heads in reverse order). undefined: not an fa3 dq name, or a shape that does not fit (3 consumers of
 * 2 tiles: 160 registers a consumer; more than 227 KB of shared memory at heads of 128).
 */
export function fa3DqShape(name: string): FlashFa3DqShape | undefined {
  if (name === 'fa3') return FA3_DQ_DEFAULT;
  const m = /^fa3-c([23])-t([12])-s([2-9])(?:-g([1-9]\d*)|-p([1-9]\d*)?)?(-r)?$/.exec(name);
  if (!m) return undefined;
  const shape: FlashFa3DqShape = { consumers: Number(m[1]) as 2 | 3, tiles: Number(m[2]) as 1 | 2, stages: Number(m[3]), headGroup: Number(m[4] ?? 1) };
  if (name.includes('-p')) shape.persistent = m[5] ? Number(m[5]) : true;
  if (m[6]) shape.reverse = true;
  if ((shape.consumers === 3 && shape.tiles === 2) || flashFa3DqSharedBytes(128, shape) > 227 * 1024) return undefined;
  return shape;
}

/**
 * The default dq pass for heads of 128 on sm_90a: the warp-specialized pass on persistent blocks (one an
 * SM), the heads from the last (whose dsᵀ the dk/dv kernel wrote last, partly still in L2). NVIDIA H200
 * (ninth session, same process, bench/RESULTS-attention.md): right after the default dk/dv 0.190 / 0.190 ms
 * against 0.234 / 0.249 for the wgmma pass; alone (without -r) 0.209 / 0.211 against 0.251 / 0.246. H100
 * (seventh session's last call): right after dk/dv 0.256 / 0.256 against 0.259 / 0.262. The same bits.
 */
const DQ_DEFAULT_HEAD_128: FlashDqKernel = 'fa3-c2-t2-s4-p-r';

/**
 * The dq pass launchFlashBackward uses by default: DQ_DEFAULT_HEAD_128 for heads of 128 and wgmma for heads
 * of 64 where the wgmma kernels run, mma.sync elsewhere. $MPT_CUDA_DQ picks another for an A/B: mma, wgmma,
 * fa3 or an fa3 shape name (fa3DqShape).
 */
export function flashDqDefault(kernels: KernelCache, dHead: number): FlashDqKernel {
  const choice = process.env.MPT_CUDA_DQ ?? '';
  if (choice === 'mma') return 'mma';
  if (choice !== '' && choice !== 'wgmma' && !fa3DqShape(choice)) {
    throw new UserError(`MPT_CUDA_DQ: '${choice}' is not a dq pass (mma, wgmma, fa3, fa3-cC-tT-sS[-gG | -p[N]][-r])`);
  }
  if (!wgmmaUsable(kernels, dHead)) return 'mma';
  if (choice !== '') return choice as FlashDqKernel;
  return dHead === 128 ? DQ_DEFAULT_HEAD_128 : 'wgmma';
}

/** Shared memory of flash_backward_dq_wgmma: 3 stages × (K tile, two dsᵀ tiles of 64 × 64), 1 KB to align. */
export function flashWgmmaDqSharedBytes(dHead: number): number {
  return 3 * (64 * dHead * 2 + 2 * 64 * 64 * 2) + 1024;
}

/**
 * dq, dk and dv of causal attention with queries = keys (rows [batch, t, nHeads·dHead]). With `ds`:
 * dk/dv first, storing dsᵀ, then dq from it (4 + 1 products); without: dq recomputing S and dP, then
 * dk/dv (3 + 4 products). Both are deterministic (no atomics). `chunk` shapes the mma.sync kernels
 * only; `dkdvKernel` picks the dk/dv kernel (default: flashDkdvDefault), `dqKernel` the kernel of dq
 * from the stored dsᵀ (default: flashDqDefault).
 */
export function launchFlashBackward(kernels: KernelCache, a: FlashBackwardArgs, chunk = FLASH_BACKWARD_CHUNK_DEFAULT,
  parts: 'both' | 'dq' | 'dkdv' = 'both', dkdvKernel: FlashDkdvKernel = flashDkdvDefault(kernels, a.dHead),
  dqKernel: FlashDqKernel = flashDqDefault(kernels, a.dHead)): void {
  if ((dkdvKernel !== 'mma' || dqKernel !== 'mma') && !wgmmaUsable(kernels, a.dHead)) {
    const which = dkdvKernel === 'mma' ? (dqKernel === 'wgmma' ? 'flash_backward_dq_wgmma' : 'flash_backward_dq_fa3')
      : fa3DkdvShape(dkdvKernel) ? 'flash_backward_dkdv_fa3' : 'flash_backward_dkdv_wgmma';
    throw new Error(`${which} needs sm_90a and heads of 64 or 128 (${kernels.architecture()}, head ${a.dHead})`);
  }
  const defs = { MPT_BF16: true, HEAD_DIM: a.dHead, BWD_CHUNK: chunk };
  const row = rowBytes(a.dHead), grid = [a.batch * a.nHeads, Math.ceil(a.t / 64)];
  const ds = a.ds ?? 0;
  const dqFa3 = fa3DqShape(dqKernel);
  const dq = () => {
    if (ds && dqFa3) {  // grid (batch·nHeads, query blocks) in head groups, or persistent: at most a block an SM
      const pairs = a.batch * a.nHeads, qBlocks = Math.ceil(Math.ceil(a.t / 64) / (dqFa3.consumers * dqFa3.tiles));
      const p = dqFa3.persistent;
      kernels.get('flash_backward_dq_fa3.cu', 'flash_backward_dq_fa3', {
        MPT_BF16: true, HEAD_DIM: a.dHead, DQF_CONSUMERS: dqFa3.consumers, DQF_TILES: dqFa3.tiles, DQF_STAGES: dqFa3.stages,
        DQF_GROUP: dqFa3.headGroup, DQF_PERSISTENT: p !== undefined, DQF_REVERSE: dqFa3.reverse ?? false,
      }).launch(p === undefined ? [pairs, qBlocks] : [persistentBlocks(kernels, pairs * qBlocks, p)],
        [128 * (dqFa3.consumers + 1)], [a.k, ds, a.dq, a.t, a.nHeads, pairs, a.scale], flashFa3DqSharedBytes(a.dHead, dqFa3));
    } else if (ds && dqKernel === 'wgmma') {  // head-major grid: 128 queries a block (2 warpgroups) × batch·nHeads
      kernels.get('flash_backward_wgmma.cu', 'flash_backward_dq_wgmma', { MPT_BF16: true, HEAD_DIM: a.dHead }).launch(
        [Math.ceil(a.t / 128), a.batch * a.nHeads], [256], [a.k, ds, a.dq, a.t, a.nHeads, a.scale], flashWgmmaDqSharedBytes(a.dHead));
    } else if (ds) {  // 128 queries a block: 256 threads; shared 2 stages × (K tile, two dsᵀ tiles)
      kernels.get('flash_backward.cu', 'flash_backward_dq_stored', defs).launch([a.batch * a.nHeads, Math.ceil(a.t / 128)], [256],
        [a.k, ds, a.dq, a.t, a.nHeads, a.scale], 2 * (64 * row + 2 * 64 * 64 * 2));
    } else {
      kernels.get('flash_backward.cu', 'flash_backward_dq', defs).launch(grid, [128],
        [a.q, a.k, a.v, a.dOut, a.lse, a.D, a.slopes, a.dq, a.t, a.nHeads, a.scale], 2 * 2 * 64 * row);
    }
  };
  const dkdvArgs = [a.q, a.k, a.v, a.dOut, a.lse, a.D, a.slopes, a.dk, a.dv, ds, a.t, a.nHeads, a.scale];
  // mma.sync: shared K, V and 2 stages of Q, dO tiles, 2 stages of lse and D. wgmma: the same in 128-byte-swizzled tiles.
  const headMajor = dkdvKernel === 'wgmma-head-major';
  const fa3 = fa3DkdvShape(dkdvKernel), strides = dkdvStrideDefines(a);
  const maps = fa3?.tma ? dkdvMaps(a) : undefined;  // undefined: cp.async
  const dkdv = () => (fa3
    ? kernels.get('flash_backward_wgmma.cu', maps ? 'flash_backward_dkdv_fa3_tma' : 'flash_backward_dkdv_fa3', {
      MPT_BF16: true, HEAD_DIM: a.dHead, FB_STAGES: fa3.stages, FB_GROUP: fa3.headGroup, FB_PINGPONG: fa3.pingpong ?? false, FB_TMA: maps !== undefined, ...strides,
    })
      .launch([a.batch * a.nHeads, Math.ceil(a.t / 128)], [384], maps ? [...dkdvArgs, ...maps] : dkdvArgs, flashFa3DkdvSharedBytes(a.dHead, fa3.stages))
    : dkdvKernel !== 'mma'
    ? kernels.get('flash_backward_wgmma.cu', 'flash_backward_dkdv_wgmma', { MPT_BF16: true, HEAD_DIM: a.dHead, WB_HEAD_MAJOR: headMajor ? 1 : false, ...strides })
      .launch(headMajor ? [grid[1], grid[0]] : grid, [128], dkdvArgs, flashWgmmaDkdvSharedBytes(a.dHead))
    : kernels.get('flash_backward.cu', 'flash_backward_dkdv', { ...defs, ...strides }).launch(grid, [128], dkdvArgs, 6 * 64 * row + 4 * 64 * 4));
  if (ds) {
    if (parts !== 'dq') dkdv();
    if (parts !== 'dkdv') dq();
  } else {
    if (parts !== 'dkdv') dq();
    if (parts !== 'dq') dkdv();
  }
}
