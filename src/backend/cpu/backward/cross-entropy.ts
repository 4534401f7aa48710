import type { CpuPool } from '../pool.js';
import { bfloat16BitsToFloat32, float32ToBfloat16Bits } from '../../../util/dtype.js';
import { matmulABt, sharedFloat32, transpose } from './matmul.js';

/**
 * The output layer fused with cross entropy, a block of rows at a time so that the logits of the
 * whole batch ([n, vocab] float32: 800 MB for 2×2048 tokens of the seed model) never exist at once:
 *   z = c · x·Wᵀ (c = logitScale or 1),  loss_r = logsumexp(z_r) − z_r[target_r]
 *   dz = lossScale · (softmax(z) − onehot(target)),  dx = c · dz·W,  dW = c · dzᵀ·x
 * Rows whose target is −1 count for nothing. Losses are summed in float64.
 * `logitType` 'bfloat16' rounds each scaled logit to bf16 before the softmax: the math of the original
 * code under autocast (F.linear's bf16 output, a float32 loss from it), which the CUDA backend's bf16
 * path computes; its twin here, for the tests.
 */
const LOGIT_ELEMENTS_PER_BLOCK = 1 << 22;

export function crossEntropyWithOutput(
  pool: CpuPool, x: Float32Array, table: Float32Array | Uint16Array, targets: Int32Array,
  n: number, d: number, vocab: number, logitScale: number, lossScale: number, gradients: boolean,
  logitType: 'float32' | 'bfloat16' = 'float32',
): { lossSum: number; count: number; dx: Float32Array | null; dTable: Float32Array | null } {
  const blockRows = Math.max(1, Math.floor(LOGIT_ELEMENTS_PER_BLOCK / vocab));
  const dx = gradients ? sharedFloat32(n * d) : null;
  const dTable = gradients ? new Float32Array(vocab * d) : null;
  const tableT = gradients ? transpose(table, vocab, d) : null;
  let lossSum = 0, count = 0;
  for (let r0 = 0; r0 < n; r0 += blockRows) {
    const rows = Math.min(blockRows, n - r0);
    const xBlock = x.subarray(r0 * d, (r0 + rows) * d);
    const z = matmulABt(pool, xBlock, table, rows, d, vocab);
    let any = false;
    for (let r = 0; r < rows; r++) {
      const target = targets[r0 + r];
      const row = z.subarray(r * vocab, (r + 1) * vocab);
      if (target < 0) { row.fill(0); continue; }
      if (target >= vocab) throw new RangeError(`cross entropy: target ${target} is outside the vocabulary of ${vocab}`);
      any = true;
      let max = -Infinity;
      // The max of the logits as stored (float32, or bf16 values) in the pass that scales them.
      if (logitType === 'bfloat16') {
        for (let j = 0; j < vocab; j++) { row[j] = bfloat16BitsToFloat32(float32ToBfloat16Bits(row[j] * logitScale)); if (row[j] > max) max = row[j]; }
      } else {
        for (let j = 0; j < vocab; j++) { row[j] *= logitScale; if (row[j] > max) max = row[j]; }
      }
      let sum = 0;
      for (let j = 0; j < vocab; j++) sum += Math.exp(row[j] - max);
      const lse = max + Math.log(sum);
      lossSum += lse - row[target];
      count++;
      if (gradients) {
        // z is reused in place as c·dz, the gradient of the raw logits x·Wᵀ.
        const k = lossScale * logitScale;
        for (let j = 0; j < vocab; j++) row[j] = k * Math.exp(row[j] - lse);
        row[target] -= k;
      }
    }
    if (!gradients || !any) continue;
    dx!.set(matmulABt(pool, z, tableT!, rows, vocab, d), r0 * d);
    const dW = matmulABt(pool, transpose(z, rows, vocab), transpose(xBlock, rows, d), vocab, rows, d);
    for (let i = 0; i < dW.length; i++) dTable![i] += dW[i];
  }
  return { lossSum, count, dx, dTable };
}
