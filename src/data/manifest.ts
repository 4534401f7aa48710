import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, UserError } from '../util/errors.js';

/**
 * The prepared dataset's description. `manifest.json` in the dataset folder is the index the loader
 * reads: per source and split, every shard file in order with its sample count. Each `--shard i/N`
 * run writes its own part manifest under `parts/`; `mergeParts` checks them and writes the whole.
 */
export const MANIFEST_FORMAT = 'mpt-ts-tokens/1';
export const MANIFEST_FILE = 'manifest.json';
export const PARTS_DIR = 'parts';

export type Split = 'train' | 'val';
export const SPLITS: readonly Split[] = ['train', 'val'];

export interface ShardEntry {
  /** Path relative to the dataset folder. */
  file: string;
  samples: number;
}

export interface SplitStats {
  documents: number;
  /** Tokens of the documents themselves, without the EOS after each. */
  documentTokens: number;
  samples: number;
  /** Tokens after the last whole sample that could not fill one (llm-foundry drops them too). */
  droppedTokens: number;
  shards: ShardEntry[];
}

export interface SourceStats {
  train: SplitStats;
  val: SplitStats;
  /** Malformed lines reported and skipped (only with --on-bad-line skip). */
  badLines: number;
}

export interface DatasetManifest {
  format: typeof MANIFEST_FORMAT;
  tokenizerHash: string;
  eosId: number;
  seqLen: number;
  /** Token storage: uint16 little-endian, each sample `seqLen` tokens, shards hold whole samples. */
  dtype: 'uint16le';
  valFraction: number;
  parts: number;
  sources: Record<string, SourceStats>;
}

export interface InputFile {
  source: string;
  /** Relative to the input root. */
  path: string;
  bytes: number;
}

export interface PartManifest extends DatasetManifest {
  part: { index: number; count: number };
  /** Digest of the whole input listing every part must have seen (same files, same sizes). */
  listingDigest: string;
  listingFiles: number;
  inputs: InputFile[];
}

export function emptySplit(): SplitStats {
  return { documents: 0, documentTokens: 0, samples: 0, droppedTokens: 0, shards: [] };
}

export function partName(index: number, count: number): string {
  return `part-${String(index).padStart(5, '0')}-of-${String(count).padStart(5, '0')}`;
}

/** Every token written or dropped is a document token or the EOS after one: a cheap consistency check. */
export function checkSplitBalance(file: string, where: string, s: SplitStats, seqLen: number): void {
  const produced = s.documentTokens + s.documents;
  const accounted = s.samples * seqLen + s.droppedTokens;
  if (produced !== accounted) {
    throw new FormatError(file, `${where}: ${produced} tokens (documents + EOS) but ${accounted} in samples and dropped tails`);
  }
  const listed = s.shards.reduce((sum, sh) => sum + sh.samples, 0);
  if (listed !== s.samples) throw new FormatError(file, `${where}: shards hold ${listed} samples, stats say ${s.samples}`);
}

/** Read and check `manifest.json` of a prepared dataset (shard files must exist with the right size). */
export function readManifest(datasetDir: string): DatasetManifest {
  const file = join(datasetDir, MANIFEST_FILE);
  if (!existsSync(file)) {
    const parts = join(datasetDir, PARTS_DIR);
    const hint = existsSync(parts) ? ` (it holds ${PARTS_DIR}/: run 'mpt data merge ${datasetDir}' once every part is done)` : ` (run 'mpt data prepare' first)`;
    throw new UserError(`${datasetDir} is not a prepared dataset: ${MANIFEST_FILE} is missing${hint}`);
  }
  const manifest = parseManifestJson(file) as DatasetManifest;
  validateManifest(file, manifest);
  for (const [source, stats] of Object.entries(manifest.sources)) {
    for (const split of SPLITS) {
      for (const shard of stats[split].shards) {
        const path = join(datasetDir, shard.file);
        const expected = shard.samples * manifest.seqLen * 2;
        let size: number;
        try {
          size = statSync(path).size;
        } catch {
          throw new FormatError(file, `source ${source} ${split}: shard ${shard.file} is missing`);
        }
        if (size !== expected) throw new FormatError(path, `expected ${expected} bytes (${shard.samples} samples of ${manifest.seqLen} tokens), found ${size}`);
      }
    }
  }
  return manifest;
}

export function parseManifestJson(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new UserError(`cannot read ${file}: ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new FormatError(file, `not valid JSON (${(error as Error).message})`);
  }
}

export function validateManifest(file: string, m: DatasetManifest): void {
  if (m === null || typeof m !== 'object') throw new FormatError(file, 'not a manifest object');
  if (m.format !== MANIFEST_FORMAT) throw new FormatError(file, `format is ${JSON.stringify(m.format)}, expected ${MANIFEST_FORMAT}`);
  if (m.dtype !== 'uint16le') throw new FormatError(file, `dtype ${JSON.stringify(m.dtype)} is not supported`);
  if (!Number.isInteger(m.seqLen) || m.seqLen < 1) throw new FormatError(file, `seqLen must be a positive integer`);
  if (typeof m.tokenizerHash !== 'string') throw new FormatError(file, 'tokenizerHash is missing');
  if (typeof m.sources !== 'object' || m.sources === null) throw new FormatError(file, 'sources is missing');
  for (const [source, stats] of Object.entries(m.sources)) {
    for (const split of SPLITS) {
      const s = stats?.[split];
      if (!s || !Array.isArray(s.shards)) throw new FormatError(file, `source ${source}: ${split} split is missing`);
      checkSplitBalance(file, `source ${source} ${split}`, s, m.seqLen);
    }
  }
}
