import type { MptModel } from '../model/mpt.js';
import { DecoderUnsupported } from '../backend/backend.js';
import { alibiSlopes } from '../model/config.js';
import { UserError } from '../util/errors.js';
import { tokenLogProbs, type TokenLogProbs } from '../util/log-probs.js';
import { Rng } from '../util/random.js';
import { sampleToken, type SamplingOptions } from './sampling.js';
import { StopWatcher } from './stop.js';

/** What generation needs of a tokenizer: turning ids into text as they come. */
export interface TextDecoding {
  streamDecoder(): { push(id: number): string; flush(): string };
}

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens: number;
  seed?: number;
  /** End a row at this token (the tokenizer's EOS); null: never. */
  eosId: number | null;
  /** End a row when its text contains one of these; the stop string is not part of the output. */
  stop?: string[];
  /** ALiBi models can run past max_seq_len; only when asked, since quality degrades there. */
  allowBeyondMaxSeqLen?: boolean;
  /** Streaming: called with each row's new text as soon as it is final. */
  onText?: (row: number, text: string) => void;
  /** Called once if the run goes past max_seq_len (allowed) or was cut short by it. */
  onWarning?: (message: string) => void;
  /** Stops the run between steps (a server's client went away): generate rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Called once per row as soon as it ends (EOS or a stop string: while other rows of the batch run on;
   * length: at the end), with the row's final result — a server can answer that request at once.
   */
  onRowDone?: (row: number, result: GenerateResult) => void;
  /**
   * Report each generated token's log-probability and the k most likely tokens at its step (0: the
   * token's own only). These are of the model's distribution — log-softmax of the raw logits — not of
   * the one sampled from after repetition penalty, temperature, top-k and top-p (as vLLM reports by
   * default, and as scoring the same text afterwards gives). Runs on the host path (logits downloaded).
   */
  logprobs?: number;
}

export type FinishReason = 'eos' | 'stop' | 'length';

export interface GenerateResult {
  ids: number[];
  text: string;
  finishReason: FinishReason;
  /** With options.logprobs: one entry per id in `ids` (a final EOS, not in `ids`, has none). */
  logprobs?: TokenLogProbs[];
}

/**
 * Generate for several prompts at once: the prompts are left-padded into one batch, run through the
 * model once (prefill), then one token per row per step from the KV cache until every row has ended.
 */
export async function generate(model: MptModel, tokenizer: TextDecoding, prompts: number[][], options: GenerateOptions): Promise<GenerateResult[]> {
  const { maxSeqLen, alibi } = model.config;
  if (prompts.length === 0) return [];
  const longest = Math.max(...prompts.map((p) => p.length));
  if (prompts.some((p) => p.length === 0)) throw new UserError('a prompt is empty: give at least one token');
  const beyond = Boolean(options.allowBeyondMaxSeqLen);
  if (beyond && !alibi) throw new UserError('only ALiBi models can run past max_seq_len: this one has learned position embeddings');
  if (longest > maxSeqLen && !beyond) {
    throw new UserError(`the prompt has ${longest} tokens but the model's max_seq_len is ${maxSeqLen}` + (alibi ? ' (ALiBi models can go further: pass --allow-long)' : ''));
  }
  let steps = options.maxNewTokens;
  if (!beyond && longest + steps > maxSeqLen) {
    steps = maxSeqLen - longest;
    options.onWarning?.(`generation stops at max_seq_len (${maxSeqLen} tokens): at most ${steps} new tokens`);
  } else if (beyond && longest + steps > maxSeqLen) {
    options.onWarning?.(`running past max_seq_len (${maxSeqLen}) with ALiBi: expect quality to drop`);
  }

  const batch = prompts.length;
  const ids = new Int32Array(batch * longest);
  const mask = new Int32Array(batch * longest);
  prompts.forEach((prompt, b) => {
    const pad = longest - prompt.length;
    for (let i = 0; i < prompt.length; i++) {
      ids[b * longest + pad + i] = prompt[i];
      mask[b * longest + pad + i] = 1;
    }
  });
  const rng = new Rng(options.seed ?? Math.floor(Math.random() * 2 ** 32));
  const rows = prompts.map((prompt) => ({
    seen: new Set(prompt), ids: [] as number[], logprobs: [] as TokenLogProbs[], text: '', finish: null as FinishReason | null,
    decoder: tokenizer.streamDecoder(), stops: new StopWatcher(options.stop ?? []),
  }));
  const emit = (row: number, text: string) => {
    if (!text) return;
    rows[row].text += text;
    options.onText?.(row, text);
  };
  const results: GenerateResult[] = new Array(batch);
  const finish = (b: number, reason: FinishReason) => {
    const row = rows[b];
    row.finish = reason;
    // A stop string ends the text where it starts; otherwise (length, EOS) what was held back is text too.
    if (reason !== 'stop') emit(b, row.stops.push(row.decoder.flush()) + row.stops.flush());
    results[b] = { ids: row.ids, text: row.text, finishReason: reason, ...(options.logprobs !== undefined ? { logprobs: row.logprobs } : {}) };
    options.onRowDone?.(b, results[b]);
  };

  const source = tokenSource(model, batch, longest + Math.max(steps, 0), options, rng, rows.map((r) => r.seen));
  try {
    for (let step = 0; step < steps; step++) {
      options.signal?.throwIfAborted();
      const next = step === 0 ? source.first(ids, mask) : source.next();
      rows.forEach((row, b) => {
        if (row.finish) return; // finished rows keep running (batch shape) but their tokens are ignored
        const id = next[b];
        if (options.eosId !== null && id === options.eosId) { finish(b, 'eos'); return; }
        row.ids.push(id);
        if (source.logprobs) row.logprobs.push(source.logprobs[b]!);
        row.seen.add(id);
        emit(b, row.stops.push(row.decoder.push(id)));
        if (row.stops.stopped) finish(b, 'stop');
      });
      if (rows.every((r) => r.finish)) break;
      await new Promise((resolve) => setImmediate(resolve)); // let servers and streams breathe
    }
  } finally {
    source.release();
  }
  rows.forEach((row, b) => { if (!row.finish) finish(b, 'length'); });
  return results;
}

/** Where each step's tokens come from: the backend's fused decoder, or the model's forward and host sampling. */
interface TokenSource {
  /** Run the left-padded prompts; the first new token of each row. */
  first(ids: Int32Array, mask: Int32Array): Int32Array;
  /** Feed back the tokens chosen last; the next token of each row. */
  next(): Int32Array;
  release(): void;
  /** With options.logprobs: each row's scores of the tokens `first`/`next` returned last. */
  logprobs?: TokenLogProbs[];
}

function tokenSource(model: MptModel, batch: number, capacity: number, options: GenerateOptions, rng: Rng, seen: Set<number>[]): TokenSource {
  const penalty = options.repetitionPenalty ?? 1;
  const topLogprobs = options.logprobs;
  // The fused decoder samples on the device with fixed settings: no repetition penalty there, and it
  // never hands back logits, so a request for logprobs takes the host path too.
  if (model.backend.createDecoder && penalty === 1 && topLogprobs === undefined) {
    const decoder = fusedDecoder(model, batch, capacity);
    if (decoder) {
      const sampling = { temperature: options.temperature, topK: options.topK, topP: options.topP, seed: rng.nextUint32() };
      return { first: (ids, mask) => decoder.prefill(ids, mask, sampling), next: () => decoder.step(), release: () => decoder.release() };
    }
  }
  const cache = model.newCache(batch, capacity);
  let last = new Int32Array(batch);
  const source: TokenSource = {
    first: (ids, mask) => run(ids, mask), next: () => run(last, null), release: () => cache.release(),
  };
  const run = (ids: Int32Array, mask: Int32Array | null): Int32Array => {
    const logits = model.backend.download(model.forward(ids, cache, { logits: 'last', attentionMask: mask })) as Float32Array;
    const vocab = model.config.vocabSize;
    const rowOf = (b: number) => logits.subarray(b * vocab, (b + 1) * vocab);
    last = Int32Array.from({ length: batch }, (_, b) => sampleToken(rowOf(b), options, rng, penalty !== 1 ? seen[b] : []));
    if (topLogprobs !== undefined) source.logprobs = Array.from(last, (id, b) => tokenLogProbs(rowOf(b), id, topLogprobs));
    return last;
  };
  return source;
}

/** The backend's fused decoder for this model, or null when it does not run this kind of model. */
function fusedDecoder(model: MptModel, batch: number, capacity: number) {
  try {
    return model.backend.createDecoder!(model.config, model.params, model.config.alibi ? alibiSlopes(model.config) : null, batch, capacity);
  } catch (error) {
    if (error instanceof DecoderUnsupported) return null;
    throw error;
  }
}
