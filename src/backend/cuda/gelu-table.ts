/**
 * The launches of the table-driven GELU kernels (kernels/gelu_table.cuh): exact GELU forward
 * (elementwise.cu gelu_table8) and backward (train_elementwise.cu gelu_backward_table8) for bf16, with
 * results bit-identical to gelu_bf16x8 and gelu_backward8. The table (4,864 entries: the bf16 inputs of
 * magnitude in [2^-15, 16) of either sign) is built once per backend on the device, by the same formula.
 */
import type { CudaBackend } from './index.js';
import type { CudaTensor } from './tensor.js';

/** Entries of a table: 2 signs × (131 − 112) exponents × 128 mantissas (GELU_EXP_LO/HI in gelu_table.cuh). */
export const GELU_TABLE_ENTRIES = 2 * (131 - 112) * 128;

/** How the table kernels are launched (benchmarks compare others). */
export interface GeluTableShape {
  /** Threads a block (at most 512). */
  threads: number;
  /** 16-byte vectors a thread loads before computing (GELU_UNROLL). */
  unroll: number;
  /** Blocks an SM in the grid (the loop strides over the rest). */
  blocksPerSM: number;
  /** Last vector first (GELU_REVERSE). */
  reverse: boolean;
}

/**
 * The launch the training step was measured with (H100, 2026-11-28, bench/RESULTS-cuda-train.md). Alone at
 * bf16 [16384, 8192], right after a kernel wrote the input, the other shapes tried were within ±1% of it:
 * forward 0.1927 ms (1 a turn 0.1940, 4 a turn at 2/SM 0.1951, 256 threads at 8/SM 0.1941, 3/SM 0.1930,
 * 16/SM 0.1911, reverse 0.1898), backward 0.2826 (0.2845, 0.2846, 0.2863, 0.2815, 0.2805, 0.2794);
 * none of them was run in the step.
 */
export const GELU_TABLE_SHAPE: GeluTableShape = { threads: 512, unroll: 2, blocksPerSM: 4, reverse: false };

function geluTableDefines(shape: GeluTableShape): Record<string, string | number | boolean> {
  return { MPT_BF16: true, GELU_UNROLL: shape.unroll, GELU_REVERSE: shape.reverse };
}

/** Blocks for n8 16-byte vectors: at most blocksPerSM an SM, no more than the vectors need. */
function geluTableBlocks(be: CudaBackend, n8: number, shape: GeluTableShape): number {
  return Math.max(1, Math.min(Math.ceil(n8 / (shape.threads * shape.unroll)), be.device.multiprocessors * shape.blocksPerSM));
}

/**
 * One table kernel of `file` over n8 16-byte vectors at the backend's launch shape (geluTableShape):
 * `pointers` are its tensors, then n8 and the table.
 */
export function launchGeluTable(be: CudaBackend, file: string, kernel: string, pointers: number[], n8: number, table: CudaTensor): void {
  const shape = be.geluTableShape;
  be.kernels.get(file, kernel, geluTableDefines(shape)).launch([geluTableBlocks(be, n8, shape)], [shape.threads], [...pointers, n8, table.ptr]);
}

/** A table that lives with the backend, filled by `builder` (a kernel of `file` that takes the table alone). */
export function buildGeluTable(be: CudaBackend, file: string, builder: string, dtype: 'bfloat16' | 'float32'): CudaTensor {
  const table = be.persistent([GELU_TABLE_ENTRIES], dtype);
  be.kernels.get(file, builder, { MPT_BF16: true }).launch([Math.ceil(GELU_TABLE_ENTRIES / 256)], [256], [table.ptr]);
  return table;
}

/** The bf16 bits of each table slot's input, in slot order (gelu_slot_input in gelu_table.cuh; tests). */
export function geluTableInputBits(): Uint16Array {
  const perSign = GELU_TABLE_ENTRIES / 2, bits = new Uint16Array(GELU_TABLE_ENTRIES);
  for (let s = 0; s < GELU_TABLE_ENTRIES; s++) {
    const sign = s >= perSign ? 1 : 0;
    bits[s] = (sign << 15) | (s - sign * perSign + (112 << 7));
  }
  return bits;
}
