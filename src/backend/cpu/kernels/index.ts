import { attentionHead, type AttentionProblem } from './attention.js';
import { geluRange } from './gelu-fast.js';
import { linearColumns } from './linear.js';
import { attentionDecodeWasm, decodeItemCount, type WasmDecodeAttentionTask } from '../wasm/attention-decode.js';
import { attentionItemsWasm, itemCount, type WasmAttentionTask } from '../wasm/attention-heads.js';
import { linearColumnsWasm, type WasmLinearTask } from '../wasm/linear-columns.js';

/**
 * The kernels that are split across threads, as plain data so a worker can run its share.
 * `runTask(task, start, end, part)` does the part [start, end) of the task's parallel dimension;
 * `part` (0 on the main thread, i on worker i) picks the thread's own piece of a task's scratch.
 */
export type ParallelTask =
  | { kind: 'linear'; x: Float32Array; w: Float32Array | Uint16Array; bias: Float32Array | null; out: Float32Array; rows: number; inWidth: number; outWidth: number }
  | { kind: 'attention'; problem: AttentionProblem }
  | { kind: 'gelu'; x: Float32Array; out: Float32Array }
  | WasmLinearTask
  | WasmAttentionTask
  | WasmDecodeAttentionTask;

/** The kinds that run generated wasm kernels: a worker must have them installed first. */
export const usesWasm = (task: ParallelTask): boolean => task.kind === 'linear-wasm' || task.kind === 'attention-wasm' || task.kind === 'attention-decode-wasm';

/** How many independent pieces a task splits into (output columns, batch × head pairs or blocks of their queries, or elements). */
export function taskSize(task: ParallelTask): number {
  if (task.kind === 'attention') return task.problem.out.length / (task.problem.tq * task.problem.dHead);
  if (task.kind === 'gelu') return task.x.length;
  if (task.kind === 'attention-wasm') return itemCount(task);
  if (task.kind === 'attention-decode-wasm') return decodeItemCount(task);
  return task.outWidth;
}

export function runTask(task: ParallelTask, start: number, end: number, part = 0): void {
  if (task.kind === 'linear') {
    linearColumns(task.x, task.w, task.bias, task.out, task.rows, task.inWidth, task.outWidth, start, end);
    return;
  }
  if (task.kind === 'linear-wasm') {
    linearColumnsWasm(task, start, end);
    return;
  }
  if (task.kind === 'gelu') {
    geluRange(task.x, task.out, start, end);
    return;
  }
  if (task.kind === 'attention-wasm') {
    attentionItemsWasm(task, start, end, part);
    return;
  }
  if (task.kind === 'attention-decode-wasm') {
    attentionDecodeWasm(task, start, end, part);
    return;
  }
  const p = task.problem;
  for (let pair = start; pair < end; pair++) {
    attentionHead(p, Math.floor(pair / p.nHeads), pair % p.nHeads, 0, p.tq);
  }
}
