import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError, UserError } from '../util/errors.js';

/**
 * The dataset config a training run names: which prepared dataset, which sources in which
 * proportions, the seed and the global batch. As YAML or JSON:
 *
 *   dataset: ./tokens          # a folder written by `mpt data prepare` (relative to this file)
 *   seed: 17
 *   global_batch: 512          # samples per optimizer step, over all ranks
 *   preset: redpajama          # or `weights: { common_crawl: 0.67, c4: 0.15, ... }`
 */
export interface MixtureConfig {
  dataset: string;
  /** Unnormalized weights by source name; resolved from `preset` when absent. */
  weights?: Record<string, number>;
  preset?: string;
  seed: number;
  globalBatch: number;
}

/** The seed model's mixture: RedPajama sampled in LLaMA's proportions. */
export const PRESETS: Record<string, Record<string, number>> = {
  redpajama: { common_crawl: 0.67, c4: 0.15, github: 0.045, wikipedia: 0.045, book: 0.045, arxiv: 0.025, stackexchange: 0.02 },
};
export const DEFAULT_PRESET = 'redpajama';

export interface ResolvedWeights {
  /** Sources in a fixed order (sorted by name) with their normalized probabilities. */
  names: string[];
  probabilities: number[];
  notices: string[];
}

/**
 * Checks and normalizes weights: each must be a finite number ≥ 0, not all zero; weights that do not
 * sum to 1 are divided by their sum, with a notice saying so.
 */
export function resolveWeights(weights: Record<string, number>, where = 'weights'): ResolvedWeights {
  const names = Object.keys(weights).sort();
  if (names.length === 0) throw new ConfigError(`${where}: no sources listed`);
  for (const name of names) {
    const w = weights[name];
    if (typeof w !== 'number' || !Number.isFinite(w)) throw new ConfigError(`${where}.${name}: weight must be a number, got ${JSON.stringify(w)}`);
    if (w < 0) throw new ConfigError(`${where}.${name}: weight ${w} is negative`);
  }
  const sum = names.reduce((s, n) => s + weights[n]!, 0);
  if (sum === 0) throw new ConfigError(`${where}: all weights are zero, so no source can be sampled`);
  const notices: string[] = [];
  if (Math.abs(sum - 1) > 1e-9) notices.push(`${where} sum to ${sum}, not 1: normalized by dividing each by ${sum}`);
  return { names, probabilities: names.map((n) => weights[n]! / sum), notices };
}

/** Reads a dataset config file (YAML or JSON); `dataset` is resolved relative to the file. */
export function loadMixtureConfig(path: string): MixtureConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new UserError(`cannot read dataset config ${path}: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (error) {
    throw new ConfigError(`${path}: not valid YAML/JSON (${(error as Error).message})`);
  }
  return parseMixtureConfig(raw, path, dirname(path));
}

/** Validates a config object (snake_case or camelCase keys). */
export function parseMixtureConfig(raw: unknown, where = 'dataset config', baseDir = process.cwd()): MixtureConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(`${where}: expected a mapping with dataset, seed, global_batch and weights or preset`);
  const r = raw as Record<string, unknown>;
  const known = new Set(['dataset', 'weights', 'preset', 'seed', 'global_batch', 'globalBatch']);
  const unknown = Object.keys(r).filter((k) => !known.has(k));
  if (unknown.length > 0) throw new ConfigError(`${where}: unknown field(s) ${unknown.join(', ')}`);
  if (typeof r.dataset !== 'string' || r.dataset === '') throw new ConfigError(`${where}: "dataset" (the prepared dataset folder) is missing`);
  const seed = r.seed ?? 0;
  if (!Number.isSafeInteger(seed) || (seed as number) < 0) throw new ConfigError(`${where}: "seed" must be a non-negative integer, got ${JSON.stringify(seed)}`);
  const globalBatch = r.global_batch ?? r.globalBatch;
  if (!Number.isInteger(globalBatch) || (globalBatch as number) < 1) throw new ConfigError(`${where}: "global_batch" must be a positive integer, got ${JSON.stringify(globalBatch)}`);
  if (r.weights !== undefined && r.preset !== undefined) throw new ConfigError(`${where}: give "weights" or "preset", not both`);
  let weights: Record<string, number> | undefined;
  if (r.weights !== undefined) {
    if (r.weights === null || typeof r.weights !== 'object' || Array.isArray(r.weights)) throw new ConfigError(`${where}: "weights" must map source names to numbers`);
    weights = r.weights as Record<string, number>;
  }
  let preset: string | undefined;
  if (r.preset !== undefined) {
    if (typeof r.preset !== 'string' || !(r.preset in PRESETS)) throw new ConfigError(`${where}: unknown preset ${JSON.stringify(r.preset)} (known: ${Object.keys(PRESETS).join(', ')})`);
    preset = r.preset;
  }
  const dataset = isAbsolute(r.dataset) ? r.dataset : resolve(baseDir, r.dataset);
  return { dataset, weights, preset, seed: seed as number, globalBatch: globalBatch as number };
}

/** The weights a config asks for: its own, or its preset's, or the default preset's. */
export function configWeights(config: MixtureConfig): { weights: Record<string, number>; where: string } {
  if (config.weights) return { weights: config.weights, where: 'weights' };
  const preset = config.preset ?? DEFAULT_PRESET;
  const weights = PRESETS[preset];
  if (!weights) throw new ConfigError(`unknown preset ${JSON.stringify(preset)} (known: ${Object.keys(PRESETS).join(', ')})`);
  return { weights, where: `preset ${preset}` };
}
