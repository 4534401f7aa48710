import { softmaxRow } from './attention-softmax.js';
import { kernels } from './runtime.js';

/**
 * Causal attention with q, k and v on the wasm heap, as a task a worker can run its share of. The
 * math is kernels/attention.ts's (the reference this is tested against); the split differs:
 *   scores  s_ij = q_i·k_j            a generated linear tile (3, 2 or 1 query rows × one key row per
 *                                     step), its row stride set to d_model and its sum cut to one
 *                                     head's dims, so it reads q and k in place
 *   softmax p_ij = exp(scale·s_ij − (pos_i − j)·slope − max)   attention-softmax.ts
 *   output  o_i = Σ_j p_ij · v_j / Σ_j p_ij                     pv_8 / pv_1 (attention-module.ts)
 * One work item is one (batch row, head) pair and a block of up to 3 query rows.
 */
/** What both wasm attention tasks (this one and attention-decode.ts's) are given. */
export interface WasmAttentionInputs {
  /** Heap byte address of q, float32 [batch, tq, d]. */
  q: number;
  /** Heap byte addresses of k and v, float32 [batch, kvRows, d]; rows [0, kvLen) of each batch row are read. */
  k: number;
  v: number;
  kvRows: number;
  /** [batch, capacity]: 1 for a real token, 0 for padding; null when nothing is padded. */
  keyMask: Int32Array | null;
  capacity: number;
  batch: number; tq: number; kvLen: number; nHeads: number; dHead: number;
  scale: number; slopes: Float32Array | null;
  /** Heap byte address of part 0's scratch; part i's is `partBytes` further on. */
  scratch: number;
  partBytes: number;
}

/** The scratch of a part holds its scores and sums. */
export interface WasmAttentionTask extends WasmAttentionInputs {
  kind: 'attention-wasm';
  /** Where the results go: float32 [batch, tq, d] in ordinary (shared) memory. */
  out: Float32Array;
}

/** Query rows per work item: the tallest linear tile. */
export const ROWS_PER_ITEM = 3;
/** Dims per pv_8 chunk and per pv_1 chunk. */
const WIDE_CHUNK = 32, NARROW_CHUNK = 4;
const rowStats = new Float64Array(2);

export function itemCount(task: Pick<WasmAttentionTask, 'batch' | 'nHeads' | 'tq'>): number {
  return task.batch * task.nHeads * Math.ceil(task.tq / ROWS_PER_ITEM);
}

/** Scratch bytes one thread needs: a row of scores per query row of an item, and its output sums. */
export function scratchBytesPerPart(capacity: number, dHead: number): number {
  return Math.ceil((ROWS_PER_ITEM * (scoreStride(capacity) + dHead) * 4) / 64) * 64;
}

/** Floats per row of scores: the softmax works on whole float32x4, so rows are padded to a multiple of 4. */
function scoreStride(capacity: number): number {
  return Math.ceil(capacity / 4) * 4;
}

export function attentionItemsWasm(task: WasmAttentionTask, start: number, end: number, part: number): void {
  const { batch, tq, kvLen, kvRows, nHeads, dHead, scale, slopes, keyMask, capacity, out } = task;
  const k = kernels();
  const heap = k.heapFloats();
  const d = nHeads * dHead;
  const blocks = Math.ceil(tq / ROWS_PER_ITEM);
  const groups = dHead >> 3, tail = groups * 8;
  const wide = Math.floor(dHead / WIDE_CHUNK), narrow = Math.floor((dHead - wide * WIDE_CHUNK) / NARROW_CHUNK);
  const summed = wide * WIDE_CHUNK + narrow * NARROW_CHUNK;
  const stride = scoreStride(capacity);
  const scores = task.scratch + part * task.partBytes; // [ROWS_PER_ITEM][stride]
  const sums = scores + ROWS_PER_ITEM * stride * 4; // [ROWS_PER_ITEM][dHead]

  for (let item = start; item < end; item++) {
    const pair = Math.floor(item / blocks), t0 = (item % blocks) * ROWS_PER_ITEM;
    const b = Math.floor(pair / nHeads), h = pair % nHeads;
    if (b >= batch) throw new Error(`attention item ${item} is out of range`);
    const rows = Math.min(ROWS_PER_ITEM, tq - t0);
    const keys = kvLen - tq + t0 + rows; // the last row's position + 1
    const qAddress = task.q + ((b * tq + t0) * d + h * dHead) * 4;
    const kAddress = task.k + (b * kvRows * d + h * dHead) * 4;
    const vAddress = task.v + (b * kvRows * d + h * dHead) * 4;
    k.tile('f32', rows, 1)(qAddress, kAddress, scores, groups, d, stride, keys);
    if (tail < dHead) addTailProducts(heap, qAddress / 4, kAddress / 4, scores / 4, rows, keys, d, stride, tail, dHead);

    for (let r = 0; r < rows; r++) {
      const t = t0 + r, pos = kvLen - tq + t;
      const row = (scores / 4) + r * stride;
      const outOffset = (b * tq + t) * d + h * dHead;
      const sumsAddress = sums + r * dHead * 4, sumsIndex = sumsAddress / 4;
      softmaxRow(k, heap, row, pos + 1, scale, slopes ? slopes[h] : 0, pos, keyMask, b * capacity, rowStats);
      const sum = rowStats[1];
      if (sum === 0) { // no real key (a padding position): zeros, as the reference
        out.fill(0, outOffset, outOffset + dHead);
        continue;
      }
      const pAddress = row * 4;
      if (wide > 0) k.weightedSum(8)(pAddress, vAddress, d * 4, sumsAddress, pos + 1, wide);
      if (narrow > 0) k.weightedSum(1)(pAddress, vAddress + wide * WIDE_CHUNK * 4, d * 4, sumsAddress + wide * WIDE_CHUNK * 4, pos + 1, narrow);
      for (let e = summed; e < dHead; e++) {
        let s = 0;
        for (let j = 0; j <= pos; j++) s += heap[row + j] * heap[(vAddress / 4) + j * d + e];
        heap[sumsIndex + e] = s;
      }
      const inverse = 1 / sum;
      for (let e = 0; e < dHead; e++) out[outOffset + e] = heap[sumsIndex + e] * inverse;
    }
  }
}

/** The dims the 8-wide tile leaves out (dHead % 8), added to each score in float64. */
function addTailProducts(heap: Float32Array, q: number, k: number, scores: number, rows: number, keys: number, d: number, stride: number, from: number, dHead: number): void {
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < keys; j++) {
      let s = heap[scores + r * stride + j];
      for (let e = from; e < dHead; e++) s += heap[q + r * d + e] * heap[k + j * d + e];
      heap[scores + r * stride + j] = s;
    }
  }
}
