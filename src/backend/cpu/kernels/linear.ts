/**
 * out[i, j] = Σ_k x[i, k] · w[j, k] + bias[j], for output columns j in [j0, j1). The weight is float32
 * or bfloat16 bits; a bfloat16 row is widened once into a float32 scratch row and reused for a block
 * of input rows. Sums run in float64 (JavaScript numbers) over float32 inputs.
 */
const ROW_BLOCK = 4;

export function linearColumns(
  x: Float32Array, w: Float32Array | Uint16Array, bias: Float32Array | null, out: Float32Array,
  rows: number, inWidth: number, outWidth: number, j0: number, j1: number,
): void {
  const scratch = new Float32Array(inWidth);
  const scratchBits = new Uint32Array(scratch.buffer);
  const bf16 = w instanceof Uint16Array;
  for (let i0 = 0; i0 < rows; i0 += ROW_BLOCK) {
    const i1 = Math.min(i0 + ROW_BLOCK, rows);
    for (let j = j0; j < j1; j++) {
      let row: Float32Array;
      if (bf16) {
        const base = j * inWidth;
        for (let k = 0; k < inWidth; k++) scratchBits[k] = w[base + k] << 16;
        row = scratch;
      } else {
        row = (w as Float32Array).subarray(j * inWidth, (j + 1) * inWidth);
      }
      const b = bias ? bias[j] : 0;
      if (i1 - i0 === ROW_BLOCK) {
        dot4(x, i0 * inWidth, inWidth, row, out, i0 * outWidth + j, outWidth, b);
      } else {
        for (let i = i0; i < i1; i++) out[i * outWidth + j] = dot(x, i * inWidth, row, inWidth) + b;
      }
    }
  }
}

function dot(x: Float32Array, xOffset: number, row: Float32Array, n: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let k = 0;
  for (; k + 4 <= n; k += 4) {
    s0 += x[xOffset + k] * row[k];
    s1 += x[xOffset + k + 1] * row[k + 1];
    s2 += x[xOffset + k + 2] * row[k + 2];
    s3 += x[xOffset + k + 3] * row[k + 3];
  }
  for (; k < n; k++) s0 += x[xOffset + k] * row[k];
  return s0 + s1 + s2 + s3;
}

/** Four rows of x against one weight row: each weight value is loaded once for four products. */
function dot4(x: Float32Array, xOffset: number, n: number, row: Float32Array, out: Float32Array, outOffset: number, outStride: number, b: number): void {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  const o1 = xOffset + n, o2 = o1 + n, o3 = o2 + n;
  for (let k = 0; k < n; k++) {
    const wk = row[k];
    s0 += x[xOffset + k] * wk;
    s1 += x[o1 + k] * wk;
    s2 += x[o2 + k] * wk;
    s3 += x[o3 + k] * wk;
  }
  out[outOffset] = s0 + b;
  out[outOffset + outStride] = s1 + b;
  out[outOffset + 2 * outStride] = s2 + b;
  out[outOffset + 3 * outStride] = s3 + b;
}
