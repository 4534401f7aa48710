import type { Rng } from '../util/random.js';
import { bestIds } from '../util/log-probs.js';

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

  // Candidates best first (ties: lower id first); top-k and top-p only ever shorten this list. Sorting
  // all 50k scores per token would cost more than a small model's forward, so only a set known to
  // hold every survivor is sorted: the k best, or the tokens above a weight that keeps ≥ p of the mass.
  const temperature = options.temperature;
  const max = scores[argmax(scores)];
  const weight = (id: number) => Math.exp((scores[id] - max) / temperature);
  const topK = options.topK ?? 0, topP = options.topP ?? 1;
  let candidates: number[];
  let total: number;
  if (topK > 0) {
    candidates = topLogits(scores, topK).map(([id]) => id);
    total = candidates.reduce((sum, id) => sum + weight(id), 0);
  } else {
    const weights = scores.map((_, id) => weight(id));
    total = weights.reduce((a, b) => a + b, 0);
    const floor = topP < 1 ? nucleusFloor(weights, topP * total, total) : 0;
    candidates = [];
    for (let id = 0; id < weights.length; id++) if (weights[id] >= floor) candidates.push(id);
    if (topP < 1) candidates.sort((a, b) => scores[b] - scores[a] || a - b);
  }
  let probs = candidates.map(weight);
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

/**
 * A weight t such that the tokens weighing at least t carry at least `mass` of `total`: then every
 * member of the nucleus (the shortest best-first prefix reaching `mass`) weighs at least t, so
 * filtering by t keeps them all. t = (total − mass)/n works: the tokens below it weigh less than
 * n·t = total − mass together.
 */
function nucleusFloor(weights: Float64Array, mass: number, total: number): number {
  return (total - mass) / weights.length;
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** The k largest [id, logit] pairs of one row, best first (ties: the lower id first). */
export function topLogits(row: ArrayLike<number>, k: number): [number, number][] {
  return bestIds(row, k).map((id) => [id, row[id]!]);
}
