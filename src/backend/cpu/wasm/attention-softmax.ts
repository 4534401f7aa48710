import type { Kernels } from './runtime.js';

/**
 * One row of the softmax, shared by both attention splits: raw scores q·k_j at heap[row + j] for
 * j < keys become unnormalised weights exp(s_j − max) in place, padded keys exactly 0, with
 * s_j = raw_j·scale + (j − pos)·slope (pos: the query's position counted from the row's first key).
 * The passes run in wasm (biased_scores, exp_shifted in attention-module.ts); the sum stays float64.
 * Writes max and Σ weights into `into` ([−∞, 0] when no key is real, the weights then all 0).
 * Needs 4·ceil(keys / 4) floats of room at the row (it pads with −∞).
 */
export function softmaxRow(
  k: Kernels, heap: Float32Array, row: number, keys: number, scale: number, slope: number, pos: number,
  keyMask: Int32Array | null, maskOffset: number, into: Float64Array,
): void {
  const vectors = Math.ceil(keys / 4);
  for (let j = keys; j < vectors * 4; j++) heap[row + j] = -Infinity;
  if (keyMask) {
    for (let j = 0; j < keys; j++) if (keyMask[maskOffset + j] === 0) heap[row + j] = -Infinity;
  }
  const max = k.biasedScores(row * 4, vectors, scale, slope, pos);
  into[0] = max;
  if (max === -Infinity) {
    heap.fill(0, row, row + keys);
    into[1] = 0;
    return;
  }
  k.expShifted(row * 4, vectors, max);
  let sum = 0;
  if (keyMask) {
    for (let j = 0; j < keys; j++) {
      if (keyMask[maskOffset + j] === 0) heap[row + j] = 0; // exp(−∞) came out as exp(−87), not 0
      else sum += heap[row + j];
    }
  } else {
    for (let j = 0; j < keys; j++) sum += heap[row + j];
  }
  into[1] = sum;
}
