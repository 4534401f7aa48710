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
 * blocks of 3 input rows, then a 2- or 1-row tile for the rest, each sweeping along the columns.
 * With more than one block of rows, the columns go in blocks that stay in cache across the row blocks.
 */
export function linearColumnsWasm(task: WasmLinearTask, j0: number, j1: number): void {
  const { weight, rows, inWidth, outWidth } = task;
  const k = kernels();
  const groups = inWidth >> 3;
  const weightBytes = weight === 'bf16' ? 2 : 4;
  const block = rows > 3 ? Math.max(1, Math.floor(WEIGHT_BLOCK_BYTES / (inWidth * weightBytes))) : j1 - j0;
  const tiles = [k.tile(weight, 1, 1), k.tile(weight, 2, 1), k.tile(weight, 3, 1)];
  for (let jb = j0; jb < j1; jb += block) {
    const columns = Math.min(block, j1 - jb);
    for (let i = 0; i < rows; i += 3) {
      const tile = tiles[Math.min(3, rows - i) - 1];
      tile(task.x + i * inWidth * 4, task.w + jb * inWidth * weightBytes, task.out + (i * outWidth + jb) * 4, groups, inWidth, outWidth, columns);
    }
  }
}
