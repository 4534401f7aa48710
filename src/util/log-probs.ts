/**
 * Log-probabilities from one row of logits (log-softmax), in float64 after subtracting the row's
 * maximum so no exp overflows. Shared by evaluation (scoring given tokens) and generation / serving
 * (reporting the log-probability of each token and its most likely alternatives).
 */

/** What log-softmax needs of a row: log p(i) = row[i] − max − logSum. */
export interface LogSoftmaxNorm {
  max: number;
  /** log Σ exp(row − max). */
  logSum: number;
  /** First index of the maximum (torch's argmax picks the first too). */
  argmax: number;
}

export function logSoftmaxNorm(row: ArrayLike<number>): LogSoftmaxNorm {
  const n = row.length;
  let max = -Infinity, argmax = 0;
  for (let i = 0; i < n; i++) {
    const v = row[i]!;
    if (v > max) { max = v; argmax = i; }
  }
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(row[i]! - max);
  return { max, logSum: Math.log(sum), argmax };
}

export const logProbOf = (row: ArrayLike<number>, id: number, norm: LogSoftmaxNorm): number => row[id]! - norm.max - norm.logSum;

export interface TokenAlternative {
  id: number;
  logProb: number;
}

/** One position's token with its log-probability, and the k most likely tokens there. */
export interface TokenLogProbs {
  id: number;
  logProb: number;
  /** The k most likely tokens, best first (ties: lower id first); may or may not include `id`. */
  top: TokenAlternative[];
}

/** log p(target) under the row, and the row's k most likely tokens (k = 0: none). */
export function tokenLogProbs(row: ArrayLike<number>, target: number, k: number): TokenLogProbs {
  if (!(Number.isInteger(target) && target >= 0 && target < row.length)) throw new RangeError(`target token ${target} outside the ${row.length} logits`);
  const norm = logSoftmaxNorm(row);
  return { id: target, logProb: logProbOf(row, target, norm), top: bestIds(row, k).map((id) => ({ id, logProb: logProbOf(row, id, norm) })) };
}

/** Ids of the k largest values, best first (ties: lower id first). One pass, k kept in order: k is small. */
export function bestIds(row: ArrayLike<number>, k: number): number[] {
  const best: number[] = [];
  if (k <= 0) return best;
  for (let id = 0; id < row.length; id++) {
    const v = row[id]!;
    if (best.length === k && v <= row[best[k - 1]!]!) continue;
    let at = best.length;
    while (at > 0 && row[best[at - 1]!]! < v) at--;
    best.splice(at, 0, id);
    if (best.length > k) best.pop();
  }
  return best;
}
