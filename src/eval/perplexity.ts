import type { MptModel } from '../model/mpt.js';
import { scoreSpans, type SpanRequest } from './score.js';
import { slidingWindows } from './windows.js';

export interface PerplexityOptions {
  /** Window length in tokens (default: the model's max_seq_len). */
  windowLength?: number;
  /** Sliding windows that advance by `stride` tokens and score only the new ones (default: windowLength). */
  stride?: number;
  /** Drop a last window shorter than windowLength, as the trainer's packing drops that remainder. */
  dropLast?: boolean;
  /** UTF-8 bytes of the text the tokens came from, for bits per byte (null: not reported). */
  bytes?: number | null;
  /** Most windows per forward pass (default: as many as fit 2048 positions, at least one). */
  batchSize?: number;
  /** Told of the windows scored so far and the number in all. */
  onProgress?: (done: number, total: number) => void;
}

export interface PerplexityResult {
  /** Tokens scored (predicted), i.e. the count the mean is over. */
  tokens: number;
  /** Tokens in the stream. */
  inputTokens: number;
  windows: number;
  windowLength: number;
  stride: number;
  /** Σ −log p over the scored tokens, in nats. */
  totalLoss: number;
  /** totalLoss / tokens: the trainer's eval loss for the same windows. */
  meanLoss: number;
  perplexity: number;
  bytes: number | null;
  /** totalLoss in bits / bytes of text; null without a byte count. */
  bitsPerByte: number | null;
}

/**
 * Perplexity of a token stream. The definition is the trainer's eval loss: the mean, over every
 * scored token of every window, of the cross entropy (natural log) of predicting it from the tokens
 * before it in its window. Token-weighted, so it equals the trainer's per-batch means combined by
 * token count; with non-overlapping windows of the trainer's sequence length (and `dropLast`), the
 * windows are its packed samples and the two agree to float rounding.
 */
export function evaluatePerplexity(model: MptModel, tokens: Int32Array, options: PerplexityOptions = {}): PerplexityResult {
  const windowLength = options.windowLength ?? model.config.maxSeqLen;
  const stride = options.stride ?? windowLength;
  const windows = slidingWindows(tokens.length, { length: windowLength, stride, dropLast: options.dropLast });
  const requests: SpanRequest[] = windows.map((w) => ({ ids: tokens.subarray(w.start, w.end), from: w.scoreFrom - w.start }));
  const batchSize = options.batchSize ?? Math.max(1, Math.floor(2048 / windowLength));
  options.onProgress?.(0, requests.length);
  const scores = scoreSpans(model, requests, {
    maxRows: batchSize, maxTokens: batchSize * windowLength,
    onProgress: (done) => options.onProgress?.(done, requests.length),
  });
  let totalLoss = 0, scored = 0;
  for (const s of scores) { totalLoss -= s.logProb; scored += s.tokens; }
  const meanLoss = scored > 0 ? totalLoss / scored : NaN;
  const bytes = options.bytes ?? null;
  return {
    tokens: scored, inputTokens: tokens.length, windows: windows.length, windowLength, stride, totalLoss, meanLoss,
    perplexity: Math.exp(meanLoss), bytes, bitsPerByte: bytes ? totalLoss / Math.LN2 / bytes : null,
  };
}
