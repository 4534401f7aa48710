import type { WeightKind } from './linear-module.js';
import { kernels, type TileFunction } from './runtime.js';

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
/** Above this input width a single row runs 1×3 tiles (see linear-module.ts for the measurements). */
const WIDE_INPUT = 4096;

/**
 * out[i, j] = Σ_{k < inWidth − inWidth % 8} x[i, k] · w[j, k] for all rows and columns j in [j0, j1):
 * blocks of 3 input rows, then a 2- or 1-row tile for the rest, each sweeping along the columns (a
 * single row of a wide input 3 columns at a time, then 1).
 * With more than one block of rows, the columns go in blocks that stay in cache across the row blocks.
 */
export function linearColumnsWasm(task: WasmLinearTask, j0: number, j1: number): void {
  const { weight, rows, inWidth, outWidth } = task;
  const k = kernels();
  const groups = inWidth >> 3;
  const weightBytes = weight === 'bf16' ? 2 : 4;
  const block = rows > 3 ? Math.max(1, Math.floor(WEIGHT_BLOCK_BYTES / (inWidth * weightBytes))) : j1 - j0;
  const tiles = [k.tile(weight, 1, 1), k.tile(weight, 2, 1), k.tile(weight, 3, 1)];
  const threeColumns = k.tile(weight, 1, 3);
  // Rows [i, i + n) against weight rows [j, j + count) with `tile`, walking `count / cols` tiles.
  const run = (tile: TileFunction, i: number, j: number, tileCount: number) =>
    tile(task.x + i * inWidth * 4, task.w + j * inWidth * weightBytes, task.out + (i * outWidth + j) * 4, groups, inWidth, outWidth, tileCount);
  for (let jb = j0; jb < j1; jb += block) {
    const columns = Math.min(block, j1 - jb);
    for (let i = 0; i < rows; i += 3) {
      const n = Math.min(3, rows - i);
      if (n === 1 && inWidth > WIDE_INPUT) {
        const triples = Math.floor(columns / 3);
        if (triples > 0) run(threeColumns, i, jb, triples);
        if (columns > 3 * triples) run(tiles[0], i, jb + 3 * triples, columns - 3 * triples);
      } else {
        run(tiles[n - 1], i, jb, columns);
      }
    }
  }
}
