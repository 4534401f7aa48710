import type { MptModel } from '../model/mpt.js';
import { tokenLogProbs, type TokenLogProbs } from '../util/log-probs.js';
import { tokenLogProb } from './token-log-prob.js';

/**
 * The one primitive both evaluations are built on: the log-likelihood of a span of tokens given the
 * tokens before it. Perplexity scores the new tokens of each text window; in-context learning scores
 * each answer (continuation) after its prompt.
 */
export interface SpanRequest {
  /** The whole sequence: prefix then the span. At most the model's max_seq_len tokens. */
  ids: ArrayLike<number>;
  /** The span is ids[from …]: every token from there on is predicted from the ones before it (from ≥ 1). */
  from: number;
}

export interface SpanScore {
  /** Σ log p(ids[j] | ids[< j]) over the span, in nats. */
  logProb: number;
  /** How many tokens the span has. */
  tokens: number;
  /** Whether every span token is the model's most likely next token (greedy decoding reproduces it). */
  greedy: boolean;
}

export interface ScoreOptions {
  /** Most sequences per forward pass. */
  maxRows?: number;
  /** Most (padded) positions per forward pass: bounds the logits held at once (positions × vocab floats). */
  maxTokens?: number;
  /** Called after each forward pass with the number of requests scored so far. */
  onProgress?: (done: number) => void;
}

/** Id used for left padding; any valid id works because the attention mask hides it and it is never scored. */
const PAD_ID = 0;

/**
 * Score every request, several per forward pass: requests are sorted by length (longest first) so
 * each batch wastes little on padding, left-padded to the batch's longest, and run with an attention
 * mask (a padded row gives the logits it gives alone). Only the logits of span positions are
 * gathered on the device and downloaded. Results come back in the order of `requests`.
 */
export function scoreSpans(model: MptModel, requests: readonly SpanRequest[], options: ScoreOptions = {}): SpanScore[] {
  const results: SpanScore[] = requests.map((r) => ({ logProb: 0, tokens: r.ids.length - r.from, greedy: true }));
  visitSpanLogits(model, requests, options, (i, j, row) => {
    const scored = tokenLogProb(row, requests[i]!.ids[j]!);
    results[i]!.logProb += scored.logProb;
    results[i]!.greedy &&= scored.isArgmax;
  });
  return results;
}

/**
 * Per-token scores of each span, for a server's `echo` + `logprobs`: entry j − from of request i is
 * log p(ids[j] | ids[< j]) with the k most likely tokens at that position. Batched as scoreSpans.
 */
export function spanTokenLogProbs(model: MptModel, requests: readonly SpanRequest[], k: number, options: ScoreOptions = {}): TokenLogProbs[][] {
  const results: TokenLogProbs[][] = requests.map((r) => new Array(r.ids.length - r.from));
  visitSpanLogits(model, requests, options, (i, j, row) => {
    const r = requests[i]!;
    results[i]![j - r.from] = tokenLogProbs(row, r.ids[j]!, k);
  });
  return results;
}

/**
 * Run every request through the model, several per forward pass: requests are sorted by length
 * (longest first) so each batch wastes little on padding, left-padded to the batch's longest, and run
 * with an attention mask (a padded row gives the logits it gives alone). Only the logits of span
 * positions are gathered on the device and downloaded; `visit(i, j, row)` gets the logits predicting
 * ids[j] of request i, for every span position j in order.
 */
function visitSpanLogits(
  model: MptModel, requests: readonly SpanRequest[], options: ScoreOptions, visit: (request: number, position: number, row: Float32Array) => void,
): void {
  const maxRows = Math.max(1, options.maxRows ?? 8);
  const maxTokens = Math.max(1, options.maxTokens ?? 4096);
  const { maxSeqLen, vocabSize, alibi } = model.config;
  requests.forEach((r, i) => {
    if (!(r.from >= 1 && r.from < r.ids.length)) throw new RangeError(`request ${i}: span start ${r.from} must be in [1, ${r.ids.length})`);
    if (r.ids.length > maxSeqLen && !alibi) throw new RangeError(`request ${i}: ${r.ids.length} tokens exceed max_seq_len ${maxSeqLen}`);
  });
  const order = requests.map((_, i) => i).sort((a, b) => requests[b]!.ids.length - requests[a]!.ids.length || a - b);
  let done = 0;
  for (let at = 0; at < order.length;) {
    const longest = requests[order[at]!]!.ids.length;
    const rows = Math.max(1, Math.min(maxRows, Math.floor(maxTokens / longest), order.length - at));
    const batch = order.slice(at, at + rows);
    visitBatch(model, batch.map((i) => requests[i]!), longest, vocabSize, (k, j, row) => visit(batch[k]!, j, row));
    at += rows;
    done += rows;
    options.onProgress?.(done);
  }
}

function visitBatch(model: MptModel, batch: SpanRequest[], t: number, vocab: number, visit: (k: number, position: number, row: Float32Array) => void): void {
  const be = model.backend;
  const rows = batch.length;
  const ids = new Int32Array(rows * t).fill(PAD_ID);
  const mask = new Int32Array(rows * t);
  let padded = false;
  // The positions whose logits predict span tokens: position p predicts the token at p + 1.
  const gather: number[] = [];
  batch.forEach((r, b) => {
    const pad = t - r.ids.length;
    if (pad > 0) padded = true;
    for (let j = 0; j < r.ids.length; j++) {
      ids[b * t + pad + j] = r.ids[j]!;
      mask[b * t + pad + j] = 1;
    }
    for (let j = r.from; j < r.ids.length; j++) gather.push(b * t + pad + j - 1);
  });
  const cache = model.newCache(rows, t);
  let picked: Float32Array;
  // When most positions are scored (perplexity), download the logits whole: a gather would copy them twice.
  const whole = gather.length * 2 >= rows * t;
  try {
    const logits = model.forward(ids, cache, { logits: 'all', attentionMask: padded ? mask : null });
    if (whole) {
      picked = be.download(logits) as Float32Array;
    } else {
      const selected = be.rows(be.view(logits, [rows * t, vocab]), gather);
      picked = be.download(selected) as Float32Array;
      be.release(selected);
    }
    be.release(logits);
  } finally {
    cache.release();
  }
  let k = 0;
  batch.forEach((r, b) => {
    for (let j = r.from; j < r.ids.length; j++, k++) {
      const row = whole ? gather[k]! : k;
      visit(b, j, picked.subarray(row * vocab, (row + 1) * vocab));
    }
  });
}
