import type { CpuPool } from '../pool.js';
import { matmulABt, transpose } from './matmul.js';

/**
 * Gradients of y = x · Wᵀ + b over `rows` rows:
 *   dx = dy · W        (as dy · (Wᵀ)ᵀ)
 *   dW = dyᵀ · x       (as dyᵀ · (xᵀ)ᵀ)
 *   db = Σ_rows dy
 */
export function linearBackward(
  pool: CpuPool, dy: Float32Array, x: Float32Array, w: Float32Array | Uint16Array,
  rows: number, inWidth: number, outWidth: number, withBias: boolean,
): { dx: Float32Array; dWeight: Float32Array; dBias: Float32Array | null } {
  const dx = matmulABt(pool, dy, transpose(w, outWidth, inWidth), rows, outWidth, inWidth);
  const dWeight = matmulABt(pool, transpose(dy, rows, outWidth), transpose(x, rows, inWidth), outWidth, rows, inWidth);
  let dBias: Float32Array | null = null;
  if (withBias) {
    const sums = new Float64Array(outWidth);
    for (let r = 0; r < rows; r++) for (let j = 0; j < outWidth; j++) sums[j] += dy[r * outWidth + j];
    dBias = Float32Array.from(sums);
  }
  return { dx, dWeight, dBias };
}
