import { BIASED_SCORES, EXP_SHIFTED, PV_HEADS_WIDTHS, PV_WIDTHS, pvHeadsName, pvName, QK_HEADS } from './attention-module.js';
import { TILE_SHAPES, tileName, type WeightKind } from './linear-module.js';

/**
 * This thread's instance of the generated kernels. The main thread installs it when it creates the
 * heap; a worker installs it from the module and memory the pool sends before its first wasm task.
 */
export type TileFunction = (x: number, w: number, out: number, groups: number, inWidth: number, outWidth: number, tiles: number) => void;
/** pv_<n>(p, v, vStride, out, keys, chunks): see attention-module.ts. */
export type WeightedSumFunction = (p: number, v: number, vStride: number, out: number, keys: number, chunks: number) => void;
/** qk_heads and pv_heads_<n>: see attention-module.ts. */
export type ScoresAcrossHeadsFunction = (q: number, k: number, out: number, heads: number, groups: number, headBytes: number, kStride: number, outStride: number, keys: number) => void;
export type WeightedSumAcrossHeadsFunction = (p: number, v: number, acc: number, heads: number, chunks: number, headBytes: number, pStride: number, vStride: number, keys: number) => void;

export interface Kernels {
  tile(kind: WeightKind, rows: number, cols: number): TileFunction;
  /** The weighted sum of value rows, `n` float32x4 (4·n dims) per chunk; n is one of PV_WIDTHS. */
  weightedSum(n: number): WeightedSumFunction;
  scoresAcrossHeads: ScoresAcrossHeadsFunction;
  /** biased_scores(row, vectors, scale, slope, pos) → max and exp_shifted(row, vectors, max): see attention-module.ts. */
  biasedScores: (row: number, vectors: number, scale: number, slope: number, pos: number) => number;
  expShifted: (row: number, vectors: number, max: number) => void;
  /** n is one of PV_HEADS_WIDTHS. */
  weightedSumAcrossHeads(n: number): WeightedSumAcrossHeadsFunction;
  /** The heap as float32, viewed afresh (the memory may have grown since the last view). */
  heapFloats(): Float32Array;
}

let installed: Kernels | null = null;

export function installKernels(module: WebAssembly.Module, memory: WebAssembly.Memory): void {
  const exports = new WebAssembly.Instance(module, { env: { memory } }).exports;
  const byName = new Map<string, TileFunction>();
  for (const kind of ['bf16', 'f32'] as const) {
    for (const shape of TILE_SHAPES) byName.set(tileName(kind, shape), exports[tileName(kind, shape)] as TileFunction);
  }
  const sums = new Map<number, WeightedSumFunction>(PV_WIDTHS.map((n) => [n, exports[pvName(n)] as WeightedSumFunction]));
  const headSums = new Map<number, WeightedSumAcrossHeadsFunction>(PV_HEADS_WIDTHS.map((n) => [n, exports[pvHeadsName(n)] as WeightedSumAcrossHeadsFunction]));
  let view = new Float32Array(memory.buffer);
  installed = {
    tile(kind, rows, cols) {
      const f = byName.get(tileName(kind, { rows, cols }));
      if (!f) throw new Error(`no generated kernel ${tileName(kind, { rows, cols })}`);
      return f;
    },
    weightedSum(n) {
      const f = sums.get(n);
      if (!f) throw new Error(`no generated kernel ${pvName(n)}`);
      return f;
    },
    scoresAcrossHeads: exports[QK_HEADS] as ScoresAcrossHeadsFunction,
    biasedScores: exports[BIASED_SCORES] as Kernels['biasedScores'],
    expShifted: exports[EXP_SHIFTED] as Kernels['expShifted'],
    weightedSumAcrossHeads(n) {
      const f = headSums.get(n);
      if (!f) throw new Error(`no generated kernel ${pvHeadsName(n)}`);
      return f;
    },
    heapFloats() {
      if (view.buffer.byteLength !== memory.buffer.byteLength) view = new Float32Array(memory.buffer);
      return view;
    },
  };
}

export function kernels(): Kernels {
  if (!installed) throw new Error('the WebAssembly kernels are not installed on this thread');
  return installed;
}
