import type { WeightKind } from './linear-module.js';
import { kernels } from './runtime.js';

/**
 * A linear layer on the wasm heap, as a task a worker can run its share of: all addresses are heap
 * byte addresses, so the message is a handful of numbers.
 */
export interface WasmLinearTask {
  kind: 'linear-wasm';
  weight: WeightKind;
  /** float32 [rows, inWidth] */
  x: number;
  /** [outWidth, inWidth] of `weight` */
  w: number;
  /** float32 [rows, outWidth] */
  out: number;
  rows: number;
  inWidth: number;
  outWidth: number;
}

/**
 * A block of weight rows this large stays in the core's L2 cache while every block of 4 input rows
 * passes over it, so prefill reads each weight from memory once rather than once per 4 rows.
 */
const WEIGHT_BLOCK_BYTES = 256 * 1024;

/**
 * out[i, j] = Σ_{k < inWidth − inWidth % 8} x[i, k] · w[j, k] for all rows and columns j in [j0, j1):
 * blocks of 4 input rows with 4×1 tiles, the remaining rows one at a time with 1×4 and 1×1 tiles.
 */
export function linearColumnsWasm(task: WasmLinearTask, j0: number, j1: number): void {
  const { weight, rows, inWidth, outWidth } = task;
  const k = kernels();
  const groups = inWidth >> 3;
  const weightBytes = weight === 'bf16' ? 2 : 4;
  const block = rows > 4 ? Math.max(4, Math.floor(WEIGHT_BLOCK_BYTES / (inWidth * weightBytes))) : j1 - j0;
  const rows4 = k.tile(weight, 4, 1), cols4 = k.tile(weight, 1, 4), single = k.tile(weight, 1, 1);

  // Input rows [i, i + 4) or row i against weight rows [from, to).
  const at = (i: number, j: number) => [task.x + i * inWidth * 4, task.w + j * inWidth * weightBytes, task.out + (i * outWidth + j) * 4] as const;
  const fourRows = (i: number, from: number, to: number) => rows4(...at(i, from), groups, inWidth, outWidth, to - from);
  const oneRow = (i: number, from: number, to: number) => {
    const whole = Math.floor((to - from) / 4);
    if (whole > 0) cols4(...at(i, from), groups, inWidth, outWidth, whole);
    const rest = from + 4 * whole;
    if (rest < to) single(...at(i, rest), groups, inWidth, outWidth, to - rest);
  };

  for (let jb = j0; jb < j1; jb += block) {
    const je = Math.min(jb + block, j1);
    let i = 0;
    for (; i + 4 <= rows; i += 4) fourRows(i, jb, je);
    for (; i < rows; i++) oneRow(i, jb, je);
  }
}
