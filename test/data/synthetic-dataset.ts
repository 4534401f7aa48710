import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MANIFEST_FILE, MANIFEST_FORMAT, emptySplit, type DatasetManifest } from '../../src/data/manifest.js';
import { ShardWriter } from '../../src/data/shard-format.js';

/**
 * A prepared dataset written without a tokenizer, for loader tests: sample j of source s holds the
 * tokens [s, j % 65536, ⌊j / 65536⌋, 7, 7, ...], so a row read back names where it came from.
 */
export function syntheticDataset(samples: Record<string, { train: number; val?: number }>, seqLen = 8, shardBytes = 64): string {
  const root = mkdtempSync(join(tmpdir(), 'mpt-data-synth-'));
  const manifest: DatasetManifest = { format: MANIFEST_FORMAT, tokenizerHash: 'synthetic', eosId: 0, seqLen, dtype: 'uint16le', valFraction: 0, parts: 1, sources: {} };
  Object.keys(samples).sort().forEach((name, s) => {
    const stats = { train: emptySplit(), val: emptySplit(), badLines: 0 };
    for (const split of ['train', 'val'] as const) {
      const n = samples[name]![split] ?? 0;
      const writer = new ShardWriter(root, `${name}/${split}.part-00000-of-00001`, seqLen, shardBytes);
      for (let j = 0; j < n; j++) writer.write(sampleTokens(s, j, seqLen, split === 'val'));
      stats[split].shards = writer.finish();
      stats[split].samples = n;
      stats[split].documents = n; // one document filling each sample exactly, EOS included
      stats[split].documentTokens = n * (seqLen - 1);
    }
    manifest.sources[name] = stats;
  });
  writeFileSync(join(root, MANIFEST_FILE), JSON.stringify(manifest));
  return root;
}

export function sampleTokens(source: number, index: number, seqLen: number, val = false): Uint16Array {
  const t = new Uint16Array(seqLen).fill(val ? 9 : 7);
  t[0] = source;
  t[1] = index % 65536;
  t[2] = Math.floor(index / 65536);
  return t;
}

/** A prepared dataset of one source whose training samples are exactly `rows` (each seqLen tokens), in order. */
export function datasetOfRows(source: string, rows: number[][]): string {
  const seqLen = rows[0]!.length;
  const root = mkdtempSync(join(tmpdir(), 'mpt-data-rows-'));
  const manifest: DatasetManifest = { format: MANIFEST_FORMAT, tokenizerHash: 'rows', eosId: 0, seqLen, dtype: 'uint16le', valFraction: 0, parts: 1, sources: {} };
  const stats = { train: emptySplit(), val: emptySplit(), badLines: 0 };
  const writer = new ShardWriter(root, `${source}/train.part-00000-of-00001`, seqLen, 1 << 20);
  for (const row of rows) writer.write(Uint16Array.from(row));
  stats.train.shards = writer.finish();
  stats.train.samples = rows.length;
  stats.train.documents = rows.length;
  stats.train.documentTokens = rows.length * (seqLen - 1); // one document a sample, its EOS included
  stats.val.shards = new ShardWriter(root, `${source}/val.part-00000-of-00001`, seqLen, 1 << 20).finish();
  manifest.sources[source] = stats;
  writeFileSync(join(root, MANIFEST_FILE), JSON.stringify(manifest));
  return root;
}
