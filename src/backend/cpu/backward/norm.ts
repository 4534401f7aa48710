import { rowStatistics } from '../kernels/norm.js';

/**
 * Gradients of LayerNorm y = x̂·w + b with x̂ = (x − mean)·rstd, per row of width n:
 *   dx = rstd · (g − mean(g) − x̂ · mean(g·x̂))   where g = dy·w
 *   dw = Σ_rows dy·x̂,   db = Σ_rows dy
 * Mean and variance are recomputed from x (as the forward computes them), in float64.
 */
export function layerNormBackward(
  dy: Float32Array, x: Float32Array, w: Float32Array, rows: number, n: number, eps: number, withBias: boolean,
): { dx: Float32Array; dWeight: Float32Array; dBias: Float32Array | null } {
  const dx = new Float32Array(rows * n);
  const dw = new Float64Array(n);
  const db = new Float64Array(n);
  const xhat = new Float64Array(n);
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    const { mean, rstd } = rowStatistics(x, o, n, eps);
    let meanG = 0, meanGX = 0;
    for (let i = 0; i < n; i++) {
      xhat[i] = (x[o + i] - mean) * rstd;
      const g = dy[o + i] * w[i];
      meanG += g;
      meanGX += g * xhat[i];
      dw[i] += dy[o + i] * xhat[i];
      db[i] += dy[o + i];
    }
    meanG /= n;
    meanGX /= n;
    for (let i = 0; i < n; i++) dx[o + i] = rstd * (dy[o + i] * w[i] - meanG - xhat[i] * meanGX);
  }
  return { dx, dWeight: Float32Array.from(dw), dBias: withBias ? Float32Array.from(db) : null };
}
