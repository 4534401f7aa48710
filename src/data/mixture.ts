import { ConfigError } from '../util/errors.js';
import { readManifest, type DatasetManifest } from './manifest.js';
import { configWeights, resolveWeights, type MixtureConfig } from './mixture-config.js';
import { MixtureSchedule, type Draw } from './schedule.js';
import { ShardReader } from './shard-format.js';

export interface Batch {
  /** Row-major [rows, seqLen] token ids. */
  tokens: Int32Array;
  rows: number;
  seqLen: number;
  /** Source name of each row. */
  sources: string[];
  /** Where each row came from: source index (into `Mixture.sourceNames`), sample index, epoch. */
  draws: Draw[];
}

export interface Mixture {
  manifest: DatasetManifest;
  seqLen: number;
  globalBatch: number;
  /** Sources in the mixture's order (sorted names) with their normalized probabilities. */
  sourceNames: string[];
  probabilities: number[];
  /** Training samples per source: one epoch of source s is samplesPerEpoch[s] draws of s. */
  samplesPerEpoch: Record<string, number>;
  /** Weights normalized, sources left out: things a person should see once. */
  notices: string[];
  /**
   * The rows of optimizer step `step` that rank `rank` of `worldSize` consumes: global samples
   * [step·B + rank·B/W, step·B + (rank+1)·B/W), or, given `microbatch` (rows per microbatch) and
   * `microbatchIndex`, that slice's microbatchIndex-th piece.
   */
  batch(step: number, rank?: number, worldSize?: number, microbatchIndex?: number, microbatch?: number): Batch;
  validation: ValidationSet;
  close(): void;
}

/**
 * The held-out split, served in one fixed order (source by source, sample by sample), so every
 * evaluation sees the same samples. Batch i covers samples [i·B, (i+1)·B) split over ranks as in
 * training; the remainder after the last whole batch is not served.
 */
export interface ValidationSet {
  samples: number;
  samplesPerSource: Record<string, number>;
  batches(batchSize: number): number;
  batch(index: number, batchSize: number, rank?: number, worldSize?: number): Batch;
}

/** Opens a prepared dataset for training with the mixture a config describes. */
export function openMixture(config: MixtureConfig): Mixture {
  const manifest = readManifest(config.dataset);
  const { weights, where } = configWeights(config);
  const resolved = resolveWeights(weights, where);
  const notices = [...resolved.notices];
  const available = Object.keys(manifest.sources);
  resolved.names.forEach((name, s) => {
    if (!(name in manifest.sources)) {
      if (resolved.probabilities[s]! > 0) {
        throw new ConfigError(`${where}: source "${name}" has weight ${weights[name]} but the dataset ${config.dataset} has no such source (it has: ${available.join(', ')})`);
      }
      return;
    }
    if (resolved.probabilities[s]! > 0 && manifest.sources[name]!.train.samples === 0) {
      throw new ConfigError(`${where}: source "${name}" has weight ${weights[name]} but no training samples in ${config.dataset} (empty, or too little text to fill one ${manifest.seqLen}-token sample)`);
    }
  });
  const unused = available.filter((n) => !resolved.names.includes(n));
  if (unused.length > 0) notices.push(`sources in the dataset but not in the ${where}, so never sampled: ${unused.join(', ')}`);

  const seqLen = manifest.seqLen;
  const counts = resolved.names.map((n) => manifest.sources[n]?.train.samples ?? 0);
  const schedule = new MixtureSchedule(resolved.probabilities, counts, config.seed);
  const readers = resolved.names.map((n) => new ShardReader(config.dataset, manifest.sources[n]?.train.shards ?? [], seqLen));
  const rowsToBatch = batchReader(seqLen);
  const validation = openValidation(config.dataset, manifest);
  return {
    manifest, seqLen, globalBatch: config.globalBatch, sourceNames: resolved.names, probabilities: resolved.probabilities,
    samplesPerEpoch: Object.fromEntries(resolved.names.map((n, s) => [n, counts[s]!])), notices, validation,
    batch(step, rank = 0, worldSize = 1, microbatchIndex, microbatch) {
      const { start, rows } = slice(step, config.globalBatch, rank, worldSize, microbatchIndex, microbatch);
      return rowsToBatch(schedule.draws(start, rows), (d) => readers[d.source]!, resolved.names);
    },
    close() {
      for (const r of readers) r.close();
      validation.close();
    },
  };
}

/** Which global samples a rank's (micro)batch covers; every bad combination is an error that says why. */
export function slice(step: number, globalBatch: number, rank: number, worldSize: number, microbatchIndex?: number, microbatch?: number): { start: number; rows: number } {
  if (!Number.isSafeInteger(step) || step < 0) throw new RangeError(`step must be a non-negative integer, got ${step}`);
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new RangeError(`worldSize must be a positive integer, got ${worldSize}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw new RangeError(`rank ${rank} is outside [0, ${worldSize})`);
  if (globalBatch % worldSize !== 0) throw new ConfigError(`global batch ${globalBatch} does not divide evenly over ${worldSize} ranks`);
  const perRank = globalBatch / worldSize;
  let start = step * globalBatch + rank * perRank;
  let rows = perRank;
  if (microbatchIndex !== undefined || microbatch !== undefined) {
    const m = microbatch ?? perRank;
    if (!Number.isInteger(m) || m < 1 || perRank % m !== 0) throw new ConfigError(`microbatch ${m} does not divide the per-rank batch ${perRank}`);
    const i = microbatchIndex ?? 0;
    if (!Number.isInteger(i) || i < 0 || i >= perRank / m) throw new RangeError(`microbatch index ${i} is outside [0, ${perRank / m})`);
    start += i * m;
    rows = m;
  }
  return { start, rows };
}

/**
 * Only the held-out split of a prepared dataset (all its sources, in the fixed order above), for an
 * evaluation that reads a dataset other than the training mixture's (llm-foundry's eval_loader).
 */
export function openValidationSplit(dataset: string): ValidationSet & { seqLen: number; close(): void } {
  const manifest = readManifest(dataset);
  return { ...openValidation(dataset, manifest), seqLen: manifest.seqLen };
}

/** Reads drawn rows out of their shards into one batch. */
function batchReader(seqLen: number): (draws: Draw[], readerOf: (d: Draw) => ShardReader, names: string[]) => Batch {
  const scratch = new Uint16Array(seqLen);
  return (draws, readerOf, names) => {
    const tokens = new Int32Array(draws.length * seqLen);
    draws.forEach((d, row) => {
      readerOf(d).read(d.index, scratch);
      tokens.set(scratch, row * seqLen);
    });
    return { tokens, rows: draws.length, seqLen, sources: draws.map((d) => names[d.source]!), draws };
  };
}

function openValidation(root: string, manifest: DatasetManifest): ValidationSet & { close(): void } {
  const rowsToBatch = batchReader(manifest.seqLen);
  const names = Object.keys(manifest.sources).sort();
  const readers = names.map((n) => new ShardReader(root, manifest.sources[n]!.val.shards, manifest.seqLen));
  const starts: number[] = [];
  let total = 0;
  for (const r of readers) {
    starts.push(total);
    total += r.samples;
  }
  const batches = (batchSize: number) => {
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`batch size must be a positive integer, got ${batchSize}`);
    return Math.floor(total / batchSize);
  };
  return {
    samples: total,
    samplesPerSource: Object.fromEntries(names.map((n, s) => [n, readers[s]!.samples])),
    batches,
    batch(index, batchSize, rank = 0, worldSize = 1) {
      if (!Number.isInteger(index) || index < 0 || index >= batches(batchSize)) throw new RangeError(`validation batch ${index} is outside [0, ${batches(batchSize)})`);
      const { start, rows } = slice(index, batchSize, rank, worldSize);
      const draws: Draw[] = [];
      for (let v = start; v < start + rows; v++) {
        let s = starts.length - 1;
        while (starts[s]! > v) s--;
        draws.push({ source: s, index: v - starts[s]!, epoch: 0 });
      }
      return rowsToBatch(draws, (d) => readers[d.source]!, names);
    },
    close() {
      for (const r of readers) r.close();
    },
  };
}
