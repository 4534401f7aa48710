import { existsSync, promises as fs, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.js';
import { FormatError, UserError } from '../util/errors.js';
import {
  MANIFEST_FILE, PARTS_DIR, SPLITS, checkSplitBalance, emptySplit, parseManifestJson, partName, validateManifest,
  type DatasetManifest, type InputFile, type PartManifest, type SourceStats,
} from './manifest.js';
import { assignFiles, compareInputs, listingDigest } from './sources.js';

/**
 * Joins the part manifests of a `--shard i/N` run into the dataset's `manifest.json`, after checking
 * that they belong together: every part 0..N-1 present once, the same tokenizer, sequence length,
 * validation fraction and input listing, each part holding exactly the files the deterministic split
 * gives it, and every shard file present with the size its sample count implies.
 */
export async function mergeParts(datasetDir: string): Promise<DatasetManifest> {
  const partsDir = join(datasetDir, PARTS_DIR);
  let names: string[];
  try {
    names = (await fs.readdir(partsDir)).filter((n) => /^part-\d+-of-\d+\.json$/.test(n)).sort();
  } catch {
    throw new UserError(`${datasetDir}: no ${PARTS_DIR}/ folder: nothing was prepared here`);
  }
  if (names.length === 0) throw new UserError(`${partsDir}: no part manifests (part-*-of-*.json) found`);
  const parts = names.map((name) => {
    const file = join(partsDir, name);
    const m = parseManifestJson(file) as PartManifest;
    validateManifest(file, m);
    if (!m.part || !Array.isArray(m.inputs)) throw new FormatError(file, 'not a part manifest (part or inputs missing)');
    return { file, m };
  });

  const first = parts[0]!.m;
  const count = first.part.count;
  const seen = new Map<number, string>();
  for (const { file, m } of parts) {
    const differ = (what: string, a: unknown, b: unknown) =>
      new FormatError(file, `${what} is ${JSON.stringify(b)} but ${parts[0]!.file} has ${JSON.stringify(a)}: these parts are not one dataset`);
    if (m.part.count !== count) throw differ('the part count', count, m.part.count);
    if (m.tokenizerHash !== first.tokenizerHash) throw differ('the tokenizer hash', first.tokenizerHash, m.tokenizerHash);
    if (m.seqLen !== first.seqLen) throw differ('seqLen', first.seqLen, m.seqLen);
    if (m.eosId !== first.eosId) throw differ('eosId', first.eosId, m.eosId);
    if (m.valFraction !== first.valFraction) throw differ('valFraction', first.valFraction, m.valFraction);
    if (m.listingDigest !== first.listingDigest) throw differ('the input listing digest (the parts saw different input files)', first.listingDigest, m.listingDigest);
    if (seen.has(m.part.index)) throw new FormatError(file, `part ${m.part.index} is also in ${seen.get(m.part.index)}`);
    seen.set(m.part.index, file);
  }
  const missing = Array.from({ length: count }, (_, i) => i).filter((i) => !seen.has(i));
  if (missing.length > 0) {
    throw new UserError(`${partsDir}: ${missing.length} of ${count} parts are not done yet: ${missing.slice(0, 10).map((i) => `${i}/${count}`).join(', ')}${missing.length > 10 ? ', …' : ''}`);
  }
  parts.sort((a, b) => a.m.part.index - b.m.part.index);

  // The union of the parts' inputs must be the listing they all saw, split the way assignFiles splits it.
  const union: InputFile[] = parts.flatMap((p) => p.m.inputs).sort(compareInputs);
  if (union.length !== first.listingFiles || listingDigest(union) !== first.listingDigest) {
    throw new UserError(`${partsDir}: the parts' input files do not add up to the listing they were prepared from (${union.length} files, the listing had ${first.listingFiles})`);
  }
  const expected = assignFiles(union, count);
  for (const { file, m } of parts) {
    const want = expected[m.part.index]!.map((f) => f.path).join('\n');
    if (m.inputs.map((f) => f.path).join('\n') !== want) throw new FormatError(file, `holds other input files than --shard ${m.part.index}/${count} assigns`);
  }

  const sources: Record<string, SourceStats> = {};
  for (const { m } of parts) {
    for (const [source, stats] of Object.entries(m.sources)) {
      const into = (sources[source] ??= { train: emptySplit(), val: emptySplit(), badLines: 0 });
      into.badLines += stats.badLines;
      for (const split of SPLITS) {
        const a = into[split], b = stats[split];
        a.documents += b.documents;
        a.documentTokens += b.documentTokens;
        a.samples += b.samples;
        a.droppedTokens += b.droppedTokens;
        a.shards.push(...b.shards);
      }
    }
  }
  const manifest: DatasetManifest = {
    format: first.format, tokenizerHash: first.tokenizerHash, eosId: first.eosId, seqLen: first.seqLen,
    dtype: first.dtype, valFraction: first.valFraction, parts: count, sources,
  };
  const out = join(datasetDir, MANIFEST_FILE);
  for (const [source, stats] of Object.entries(sources)) {
    for (const split of SPLITS) {
      checkSplitBalance(out, `source ${source} ${split}`, stats[split], manifest.seqLen);
      for (const shard of stats[split].shards) {
        const path = join(datasetDir, shard.file);
        if (!existsSync(path)) throw new FormatError(path, `shard listed by source ${source} ${split} is missing`);
        const size = statSync(path).size, want = shard.samples * manifest.seqLen * 2;
        if (size !== want) throw new FormatError(path, `expected ${want} bytes, found ${size}`);
      }
    }
  }
  await writeFileAtomic(out, JSON.stringify(manifest, null, 1) + '\n');
  return manifest;
}

export function partManifestPath(datasetDir: string, index: number, count: number): string {
  return join(datasetDir, PARTS_DIR, `${partName(index, count)}.json`);
}
