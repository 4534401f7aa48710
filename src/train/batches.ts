import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Mixture } from '../data/index.js';
import { Permutation } from '../data/permutation.js';
import { ConfigError, UserError } from '../util/errors.js';

/**
 * Where the training loop's token batches come from. Batches are a pure function of (seed, step,
 * rank, world size, microbatch), so resuming needs nothing but the step.
 */
export interface TokenBatch {
  /** Row-major [rows, seqLen] token ids. */
  tokens: Int32Array;
  rows: number;
  seqLen: number;
}

/** Held-out samples served in one fixed order, so every evaluation sees the same batches. */
export interface EvalSet {
  /** Whole batches of batchSize samples (a remainder is not served). */
  batches(batchSize: number): number;
  batch(index: number, batchSize: number): TokenBatch;
}

export interface BatchSource {
  seqLen: number;
  /** Training samples in one epoch, when that is defined. */
  samplesPerEpoch: number | null;
  /** The rows of optimizer step `step` for rank `rank` of `worldSize`, microbatch `microbatchIndex` of `microbatch` rows. */
  batch(step: number, rank: number, worldSize: number, microbatchIndex: number, microbatch: number): TokenBatch;
  /** Held-out batches in a fixed order; null without a validation split. */
  validation: EvalSet | null;
  /** Things to tell the person once (weights normalized, sources unused). */
  notices: string[];
  close(): void;
}

/** The data pipeline's mixture (src/data) as a batch source. */
export function mixtureSource(mixture: Mixture): BatchSource {
  const counts = Object.values(mixture.samplesPerEpoch);
  return {
    seqLen: mixture.seqLen,
    samplesPerEpoch: counts.reduce((a, b) => a + b, 0),
    batch: (step, rank, worldSize, microbatchIndex, microbatch) => mixture.batch(step, rank, worldSize, microbatchIndex, microbatch),
    validation: mixture.validation.samples > 0 ? mixture.validation : null,
    notices: mixture.notices,
    close: () => mixture.close(),
  };
}

/**
 * Raw bytes of text files as tokens (ids 0–255), for tiny models that train in minutes on the CPU
 * without a tokenizer: the text is cut into seqLen windows; the last `valFraction` of the windows
 * are held out; training windows are served in a seeded permutation per epoch.
 */
export function byteTextSource(options: { paths: string[]; seqLen: number; globalBatch: number; seed: number; valFraction: number; maxBytes?: number }): BatchSource {
  const { seqLen, globalBatch, seed } = options;
  const bytes = readTextBytes(options.paths, options.maxBytes ?? 64 * 1024 * 1024);
  const windows = Math.floor(bytes.length / seqLen);
  const valWindows = Math.floor(windows * options.valFraction);
  const trainWindows = windows - valWindows;
  if (trainWindows < 1) throw new UserError(`the text files hold ${bytes.length} bytes: not one ${seqLen}-byte training sample (${options.paths.join(', ')})`);
  const permutations = new Map<number, Permutation>();
  const window = (w: number, out: Int32Array, at: number) => { for (let i = 0; i < seqLen; i++) out[at + i] = bytes[w * seqLen + i]; };
  return {
    seqLen,
    samplesPerEpoch: trainWindows,
    notices: [`byte-level text: ${bytes.length} bytes, ${trainWindows} training and ${valWindows} validation samples of ${seqLen}`],
    batch(step, rank, worldSize, microbatchIndex, microbatch) {
      const perRank = globalBatch / worldSize;
      const start = step * globalBatch + rank * perRank + microbatchIndex * microbatch;
      const tokens = new Int32Array(microbatch * seqLen);
      for (let r = 0; r < microbatch; r++) {
        const g = start + r, epoch = Math.floor(g / trainWindows);
        let perm = permutations.get(epoch);
        if (!perm) permutations.set(epoch, (perm = new Permutation(trainWindows, [seed >>> 0, epoch])));
        window(perm.at(g % trainWindows), tokens, r * seqLen);
      }
      return { tokens, rows: microbatch, seqLen };
    },
    validation: valWindows === 0 ? null : windowSet(bytes, seqLen, trainWindows, valWindows),
    close() {},
  };
}

/** Every seqLen-byte window of the text files, in order, as held-out samples (a `bytes` eval_loader). */
export function byteTextEvalSet(options: { paths: string[]; seqLen: number; maxBytes?: number }): EvalSet & { samples: number } {
  const bytes = readTextBytes(options.paths, options.maxBytes ?? 64 * 1024 * 1024);
  const windows = Math.floor(bytes.length / options.seqLen);
  if (windows < 1) throw new UserError(`the evaluation text holds ${bytes.length} bytes: not one ${options.seqLen}-byte sample (${options.paths.join(', ')})`);
  return { ...windowSet(bytes, options.seqLen, 0, windows), samples: windows };
}

/** Windows [first, first + count) of the bytes as an EvalSet. */
function windowSet(bytes: Uint8Array, seqLen: number, first: number, count: number): EvalSet {
  return {
    batches: (batchSize) => Math.floor(count / batchSize),
    batch(index, batchSize) {
      const tokens = new Int32Array(batchSize * seqLen);
      for (let r = 0; r < batchSize; r++) {
        const w = first + index * batchSize + r;
        for (let i = 0; i < seqLen; i++) tokens[r * seqLen + i] = bytes[w * seqLen + i];
      }
      return { tokens, rows: batchSize, seqLen };
    },
  };
}

/** Files (folders walked in sorted order, so the corpus is the same on every machine) up to maxBytes. */
function readTextBytes(paths: string[], maxBytes: number): Uint8Array {
  const files: string[] = [];
  const walk = (p: string) => {
    let s;
    try { s = statSync(p); } catch { throw new ConfigError(`train_loader: ${p} does not exist`); }
    if (s.isDirectory()) for (const e of readdirSync(p).sort()) walk(join(p, e));
    else if (s.isFile()) files.push(p);
  };
  for (const p of paths) walk(p);
  const chunks: Buffer[] = [];
  let total = 0;
  for (const f of files) {
    if (total >= maxBytes) break;
    const data = readFileSync(f);
    chunks.push(data.subarray(0, maxBytes - total));
    total += Math.min(data.length, maxBytes - total);
  }
  return new Uint8Array(Buffer.concat(chunks));
}
