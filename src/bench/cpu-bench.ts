import type { MptModel } from '../model/mpt.js';
import { median } from '../util/median.js';
import { Rng } from '../util/random.js';

/**
 * Inference speed of a model on its backend: prefill a random prompt, then greedy decoding with the
 * KV cache, each timed on its own. A warm-up forward first (on its own small cache) starts the worker
 * threads and lets the JIT compile the kernels, so neither counts against the timed part.
 *
 * Tokens/s count every row of the batch. The prefill's logits give each row its first new token; each
 * of the next `newTokens − 1` one-token forwards gives another, and those are the decode steps timed.
 * Peak resident memory is the process's maximum RSS so far (`process.resourceUsage().maxRSS`): it
 * includes building or loading the model, which is what a user of the machine sees.
 */
export interface BenchOptions {
  promptTokens: number;
  newTokens: number;
  batch: number;
  /** Seed of the random prompt (ids drawn from the first 50,000 of the vocabulary). */
  seed?: number;
  /** The prompt itself instead ([batch, promptTokens] row-major), e.g. to check the tokens produced. */
  prompt?: Int32Array;
}

export interface BenchResult {
  promptTokens: number;
  newTokens: number;
  batch: number;
  prefillSeconds: number;
  prefillTokensPerSecond: number;
  /** Seconds of the decode steps together, and per step (fastest, median, slowest). */
  decodeSeconds: number;
  decodeTokensPerSecond: number;
  decodeStepMs: { min: number; median: number; max: number };
  peakRssBytes: number;
  /** The greedy tokens of row 0 (so runs can be compared for sameness). */
  tokens: number[];
}

export async function benchInference(model: MptModel, options: BenchOptions): Promise<BenchResult> {
  const { promptTokens, newTokens, batch } = options;
  if (!(promptTokens >= 1 && newTokens >= 2 && batch >= 1)) {
    throw new Error(`benchInference needs promptTokens ≥ 1, newTokens ≥ 2 and batch ≥ 1 (got ${promptTokens}, ${newTokens}, ${batch})`);
  }
  const vocab = model.config.vocabSize;
  if (promptTokens + newTokens > model.config.maxSeqLen) {
    throw new Error(`a ${promptTokens}-token prompt and ${newTokens} new tokens exceed the model's ${model.config.maxSeqLen} positions`);
  }
  const rng = new Rng(options.seed ?? 1234);
  const prompt = options.prompt ?? Int32Array.from({ length: batch * promptTokens }, () => Math.floor(rng.next() * Math.min(vocab, 50000)));
  if (prompt.length !== batch * promptTokens) throw new Error(`the prompt has ${prompt.length} ids, not ${batch} × ${promptTokens}`);

  const warmup = model.newCache(batch, 2);
  model.backend.download(model.forward(prompt.subarray(0, batch), warmup, { logits: 'last' }));
  warmup.release();

  const cache = model.newCache(batch, promptTokens + newTokens);
  const tokens: number[] = [];
  let start = performance.now();
  let next = greedy(model, model.forward(prompt, cache, { logits: 'last' }), batch);
  const prefillSeconds = (performance.now() - start) / 1000;
  tokens.push(next[0]);

  const steps: number[] = [];
  for (let step = 1; step < newTokens; step++) {
    start = performance.now();
    next = greedy(model, model.forward(next, cache, { logits: 'last' }), batch);
    steps.push(performance.now() - start);
    tokens.push(next[0]);
    await new Promise((resolve) => setImmediate(resolve)); // let timers and signals through between steps
  }
  cache.release();

  const decodeSeconds = steps.reduce((a, b) => a + b, 0) / 1000;
  const sorted = [...steps].sort((a, b) => a - b);
  return {
    promptTokens, newTokens, batch,
    prefillSeconds,
    prefillTokensPerSecond: (batch * promptTokens) / prefillSeconds,
    decodeSeconds,
    decodeTokensPerSecond: (batch * steps.length) / decodeSeconds,
    decodeStepMs: { min: sorted[0], median: median(steps), max: sorted[sorted.length - 1] },
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    tokens,
  };
}

/** The argmax of each row's last logits, downloaded. */
function greedy(model: MptModel, logits: ReturnType<MptModel['forward']>, batch: number): Int32Array {
  const values = model.backend.download(logits);
  const vocab = model.config.vocabSize;
  const out = new Int32Array(batch);
  for (let b = 0; b < batch; b++) {
    let best = 0;
    for (let v = 1; v < vocab; v++) if (values[b * vocab + v] > values[b * vocab + best]) best = v;
    out[b] = best;
  }
  return out;
}
