import { logProbOf, logSoftmaxNorm } from '../util/log-probs.js';

/**
 * Log-probability of one token under one row of logits: logit[target] - log Σ exp(logits), with the
 * sum in float64 after subtracting the row's maximum (so no exp overflows). Also whether the target is
 * the greedy choice: the first index of the maximum, as torch's argmax picks.
 */
export interface TokenLogProb {
  logProb: number;
  isArgmax: boolean;
}

export function tokenLogProb(row: Float32Array, target: number): TokenLogProb {
  const n = row.length;
  if (!(target >= 0 && target < n)) throw new RangeError(`target token ${target} outside the ${n} logits`);
  const norm = logSoftmaxNorm(row);
  return { logProb: logProbOf(row, target, norm), isArgmax: norm.argmax === target };
}
