import { softmaxRow } from './attention-softmax.js';
import type { WasmAttentionInputs } from './attention-heads.js';
import { kernels } from './runtime.js';

/**
 * Attention for one or two new queries against a long KV cache on the wasm heap (decode), split along
 * the keys rather than the heads: a work item is one query of one batch row and a chunk of KEY_CHUNK
 * keys, for every head at once, so a thread reads whole key and value rows front to back (the
 * `_heads` kernels in attention-module.ts say why that matters) and even one sequence keeps every
 * core busy. Each item leaves a partial softmax per head: its max score m, its sum l of exp(s − m)
 * (float64, in `stats`) and Σ exp(s − m)·v (float32, on the heap); `combineDecodePartials` merges the
 * chunks of a query on the main thread: out = Σ_c acc_c·e^(m_c − M) / Σ_c l_c·e^(m_c − M), M = max_c m_c.
 * The per-element math is kernels/attention.ts's, which this is tested against.
 */
/** The scratch of a part holds its scores, float32 [nHeads][KEY_CHUNK]. */
export interface WasmDecodeAttentionTask extends WasmAttentionInputs {
  kind: 'attention-decode-wasm';
  /** Key chunks per query: ceil(kvLen / KEY_CHUNK). */
  chunks: number;
  /** Heap byte address of the partial sums, float32 [item][nHeads][dHead]. */
  acc: number;
  /** Per item and head: the max m and the sum l, [item][nHeads][2]. */
  stats: Float64Array;
}

/** Keys per work item (a multiple of 4: the softmax pads rows to whole float32x4). */
export const KEY_CHUNK = 128;
const rowStats = new Float64Array(2);

export const decodeItemCount = (task: Pick<WasmDecodeAttentionTask, 'batch' | 'tq' | 'chunks'>): number => task.batch * task.tq * task.chunks;

export function decodeScratchBytesPerPart(nHeads: number): number {
  return Math.ceil((nHeads * KEY_CHUNK * 4) / 64) * 64;
}

export function attentionDecodeWasm(task: WasmDecodeAttentionTask, start: number, end: number, part: number): void {
  const { tq, kvLen, kvRows, nHeads, dHead, scale, slopes, keyMask, capacity, chunks, stats } = task;
  const k = kernels();
  const heap = k.heapFloats();
  const d = nHeads * dHead;
  const groups = dHead >> 3;
  const fours = dHead >> 4, ones = (dHead >> 2) & 3, summed = dHead & ~3;
  const scores = task.scratch + part * task.partBytes;
  const scoresIndex = scores / 4;

  for (let item = start; item < end; item++) {
    const c = item % chunks, row = Math.floor(item / chunks);
    const b = Math.floor(row / tq), t = row % tq;
    const pos = kvLen - tq + t, j0 = c * KEY_CHUNK;
    const keys = Math.min(j0 + KEY_CHUNK, pos + 1) - j0;
    const acc = task.acc + item * d * 4;
    heap.fill(0, acc / 4, (acc / 4) + d);
    if (keys <= 0) { // this query's keys end before the chunk
      for (let h = 0; h < nHeads; h++) { stats[(item * nHeads + h) * 2] = -Infinity; stats[(item * nHeads + h) * 2 + 1] = 0; }
      continue;
    }
    const q = task.q + (b * tq + t) * d * 4;
    const kRow = task.k + (b * kvRows + j0) * d * 4, vRow = task.v + (b * kvRows + j0) * d * 4;
    k.scoresAcrossHeads(q, kRow, scores, nHeads, groups, dHead * 4, d * 4, KEY_CHUNK * 4, keys);
    if (groups * 8 < dHead) {
      for (let h = 0; h < nHeads; h++) {
        for (let j = 0; j < keys; j++) {
          let s = heap[scoresIndex + h * KEY_CHUNK + j];
          for (let e = groups * 8; e < dHead; e++) s += heap[(q / 4) + h * dHead + e] * heap[(kRow / 4) + j * d + h * dHead + e];
          heap[scoresIndex + h * KEY_CHUNK + j] = s;
        }
      }
    }
    for (let h = 0; h < nHeads; h++) {
      const at = (item * nHeads + h) * 2;
      softmaxRow(k, heap, scoresIndex + h * KEY_CHUNK, keys, scale, slopes ? slopes[h] : 0, pos - j0, keyMask, b * capacity + j0, rowStats);
      stats[at] = rowStats[0];
      stats[at + 1] = rowStats[1];
    }
    if (fours > 0) k.weightedSumAcrossHeads(4)(scores, vRow, acc, nHeads, fours, dHead * 4, KEY_CHUNK * 4, d * 4, keys);
    if (ones > 0) k.weightedSumAcrossHeads(1)(scores, vRow + fours * 64, acc + fours * 64, nHeads, ones, dHead * 4, KEY_CHUNK * 4, d * 4, keys);
    for (let h = 0; h < nHeads; h++) {
      for (let e = summed; e < dHead; e++) {
        let s = 0;
        for (let j = 0; j < keys; j++) s += heap[scoresIndex + h * KEY_CHUNK + j] * heap[(vRow / 4) + j * d + h * dHead + e];
        heap[(acc / 4) + h * dHead + e] = s;
      }
    }
  }
}

/** Merge the key chunks of each query (main thread, after every item has run) into `out` [batch, tq, d]. */
export function combineDecodePartials(task: WasmDecodeAttentionTask, heap: Float32Array, out: Float32Array): void {
  const { batch, tq, nHeads, dHead, chunks, stats } = task;
  const d = nHeads * dHead;
  const weights = new Float64Array(chunks);
  // Built here, then copied into `out` at once (one memory copy).
  const result = new Float32Array(out.length);
  for (let row = 0; row < batch * tq; row++) {
    for (let h = 0; h < nHeads; h++) {
      let max = -Infinity;
      for (let c = 0; c < chunks; c++) max = Math.max(max, stats[((row * chunks + c) * nHeads + h) * 2]);
      const o = row * d + h * dHead;
      if (max === -Infinity) { // no real key (a padding position): zeros, as the reference
        continue; // `result` starts at zero
      }
      let total = 0;
      for (let c = 0; c < chunks; c++) {
        const at = ((row * chunks + c) * nHeads + h) * 2;
        weights[c] = stats[at] === -Infinity ? 0 : Math.exp(stats[at] - max);
        total += weights[c] * stats[at + 1];
      }
      for (let e = 0; e < dHead; e++) {
        let s = 0;
        for (let c = 0; c < chunks; c++) s += weights[c] * heap[(task.acc / 4) + (row * chunks + c) * d + h * dHead + e];
        result[o + e] = s / total;
      }
    }
  }
  out.set(result);
}
