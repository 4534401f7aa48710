/**
 * How a long token stream is cut into model-sized windows for perplexity. Window k covers tokens
 * [k·stride, k·stride + length) and scores only the tokens that no earlier window scored, each
 * predicted from everything before it in its window:
 *  - stride = length (the default): non-overlapping windows; each scores all its tokens but the first
 *    (which has no context in its window). This is exactly the trainer's eval loss over packed
 *    samples of `length` tokens: the mean cross entropy of predicting token t+1 from tokens ≤ t,
 *    the last position of each sample having no target.
 *  - stride < length: sliding windows; every token after the first gets at least length - stride
 *    tokens of context (lower, truer perplexity, at length/stride times the compute).
 */
export interface Window {
  start: number;
  end: number;
  /** Tokens [scoreFrom, end) are scored in this window. */
  scoreFrom: number;
}

export interface WindowOptions {
  length: number;
  stride?: number;
  /** Leave out a last window shorter than `length` (the trainer's packing drops that remainder). */
  dropLast?: boolean;
}

export function slidingWindows(tokenCount: number, options: WindowOptions): Window[] {
  const { length } = options;
  const stride = options.stride ?? length;
  if (!(Number.isInteger(length) && length >= 2)) throw new RangeError(`window length must be an integer ≥ 2, got ${length}`);
  if (!(Number.isInteger(stride) && stride >= 1 && stride <= length)) throw new RangeError(`stride must be an integer in [1, ${length}], got ${stride}`);
  const windows: Window[] = [];
  let scoredUpTo = 0;
  for (let start = 0; start < tokenCount; start += stride) {
    const end = Math.min(start + length, tokenCount);
    if (options.dropLast && end - start < length) break;
    const scoreFrom = Math.max(scoredUpTo, start + 1);
    if (scoreFrom < end) windows.push({ start, end, scoreFrom });
    scoredUpTo = end;
    if (end === tokenCount) break;
  }
  return windows;
}
