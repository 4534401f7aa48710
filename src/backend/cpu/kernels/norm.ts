/** Mean and 1/sqrt(biased variance + eps) of one row of width n at offset o, summed in float64. */
export function rowStatistics(x: Float32Array, o: number, n: number, eps: number): { mean: number; rstd: number } {
  let mean = 0;
  for (let i = 0; i < n; i++) mean += x[o + i];
  mean /= n;
  let variance = 0;
  for (let i = 0; i < n; i++) { const c = x[o + i] - mean; variance += c * c; }
  variance /= n;
  return { mean, rstd: 1 / Math.sqrt(variance + eps) };
}

/** LayerNorm over rows of width n: (x − mean)/sqrt(var + eps)·w + b, with the biased variance. */
export function layerNormRows(x: Float32Array, w: Float32Array, b: Float32Array | null, out: Float32Array, rows: number, n: number, eps: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    const { mean, rstd } = rowStatistics(x, o, n, eps);
    for (let i = 0; i < n; i++) out[o + i] = (x[o + i] - mean) * rstd * w[i] + (b ? b[i] : 0);
  }
}
