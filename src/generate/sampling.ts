import type { Rng } from '../util/random.js';

export interface SamplingOptions {
  /** 0 means greedy (argmax). */
  temperature: number;
  /** Keep only the k most likely tokens (0: off). */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1: off). */
  topP?: number;
  /** > 1 discourages tokens already in the prompt or output, as in Hugging Face (1: off). */
  repetitionPenalty?: number;
}

/**
 * Pick the next token from one row of logits, in Hugging Face's order: repetition penalty, then
 * temperature, top-k, top-p, and a draw from what is left.
 */
export function sampleToken(logits: Float32Array, options: SamplingOptions, rng: Rng, seen: Iterable<number> = []): number {
  const scores = Float64Array.from(logits);
  const penalty = options.repetitionPenalty ?? 1;
  if (penalty !== 1) {
    for (const id of new Set(seen)) scores[id] = scores[id] > 0 ? scores[id] / penalty : scores[id] * penalty;
  }
  if (options.temperature <= 0) return argmax(scores);

  // Candidates sorted by score; top-k and top-p only ever shorten this list.
  let candidates = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a] || a - b);
  const topK = options.topK ?? 0;
  if (topK > 0) candidates = candidates.slice(0, topK);
  const max = scores[candidates[0]];
  let probs = candidates.map((id) => Math.exp((scores[id] - max) / options.temperature));
  let total = probs.reduce((a, b) => a + b, 0);
  const topP = options.topP ?? 1;
  if (topP < 1) {
    let cumulative = 0, keep = 0;
    while (keep < probs.length && cumulative < topP * total) cumulative += probs[keep++];
    candidates = candidates.slice(0, Math.max(keep, 1));
    probs = probs.slice(0, candidates.length);
    total = probs.reduce((a, b) => a + b, 0);
  }
  let u = rng.next() * total;
  for (let i = 0; i < candidates.length; i++) {
    u -= probs[i];
    if (u < 0) return candidates[i];
  }
  return candidates[candidates.length - 1];
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** The k largest [id, logit] pairs of one row, best first (ties: the lower id first). */
export function topLogits(row: ArrayLike<number>, k: number): [number, number][] {
  const best: [number, number][] = [];
  for (let id = 0; id < row.length; id++) {
    const v = row[id];
    if (best.length === k && v <= best[k - 1][1]) continue;
    let at = best.length;
    while (at > 0 && best[at - 1][1] < v) at--;
    best.splice(at, 0, [id, v]);
    if (best.length > k) best.pop();
  }
  return best;
}
