import { existsSync, mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { tokenizerFile } from '../io/tokenizer-location.js';
import { writeFileAtomic } from '../util/atomic.js';
import { UserError } from '../util/errors.js';
import { Progress } from '../util/progress.js';
import { MANIFEST_FORMAT, PARTS_DIR, partName, type DatasetManifest, type PartManifest, type SourceStats, type Split } from './manifest.js';
import { mergeParts, partManifestPath } from './merge.js';
import { Packer } from './packer.js';
import { readDocuments, type BadLinePolicy } from './read-documents.js';
import { DEFAULT_SHARD_BYTES, ShardWriter } from './shard-format.js';
import { assignFiles, listInputs, listingDigest } from './sources.js';
import { TokenizePool, type EncodedBatch } from './tokenize-pool.js';

export interface PrepareOptions {
  /** Folder with one sub-folder per source. */
  input: string;
  /** Dataset folder to write (shards, parts/, manifest.json). */
  output: string;
  /** A tokenizer.json, or a model folder holding one. */
  tokenizer: string;
  seqLen: number;
  /** Share of documents held out for validation (by a hash of their text). */
  valFraction?: number;
  /** This run's part of a `--shard i/N` split (default 0 of 1). */
  shard?: { index: number; count: number };
  threads?: number;
  onBadLine?: BadLinePolicy;
  /** Only these sources (default: every sub-folder of input). */
  sources?: string[];
  shardBytes?: number;
  /** Replace this part's earlier output instead of refusing. */
  force?: boolean;
  /** Notices for a person: malformed lines, ignored files. */
  onNotice?: (message: string) => void;
  quietProgress?: boolean;
}

export interface PrepareResult {
  part: PartManifest;
  /** The merged manifest, written when this run was the only part. */
  manifest?: DatasetManifest;
  seconds: number;
  /** Bytes read from disk (compressed where the input is). */
  bytesRead: number;
  /** Characters of document text tokenized, and tokens produced (EOS included). */
  textChars: number;
  tokens: number;
}

const BATCH_CHARS = 256 * 1024;
const BATCH_DOCS = 2048;

/**
 * `mpt data prepare`: tokenize every document of this part's input files on worker threads, pack
 * each source's stream into samples of exactly seqLen tokens with EOS after every document, and
 * write token shards plus this part's manifest (and the merged manifest when there is one part).
 */
export async function prepareDataset(options: PrepareOptions): Promise<PrepareResult> {
  const started = Date.now();
  const { seqLen } = options;
  if (!Number.isInteger(seqLen) || seqLen < 1) throw new UserError(`--seq-len must be a positive integer, got ${seqLen}`);
  const valFraction = options.valFraction ?? 0;
  if (!(valFraction >= 0 && valFraction < 1)) throw new UserError(`--val-fraction must be in [0, 1), got ${valFraction}`);
  const shard = options.shard ?? { index: 0, count: 1 };
  const threads = options.threads ?? Math.max(1, availableParallelism());
  if (!Number.isInteger(threads) || threads < 1) throw new UserError(`--threads must be a positive integer, got ${threads}`);
  const notice = options.onNotice ?? (() => {});

  const tokenizerPath = await tokenizerFile(options.tokenizer);
  const listing = await listInputs(options.input, options.sources);
  if (listing.ignored.length > 0) {
    notice(`ignoring ${listing.ignored.length} file(s) that are not .jsonl/.json/.txt (optionally .gz/.zst), e.g. ${listing.ignored.slice(0, 3).join(', ')}`);
  }
  const mine = assignFiles(listing.files, shard.count)[shard.index]!;
  const name = partName(shard.index, shard.count);
  const partFile = partManifestPath(options.output, shard.index, shard.count);
  if (existsSync(partFile) && !options.force) {
    throw new UserError(`${partFile} exists: part ${shard.index}/${shard.count} was already prepared (use --force to redo it)`);
  }
  mkdirSync(join(options.output, PARTS_DIR), { recursive: true });

  const totalBytes = mine.reduce((s, f) => s + f.bytes, 0);
  const progressOptions = { label: `prepare ${name}`, total: totalBytes, unit: 'bytes', quiet: options.quietProgress };
  const progress = new Progress(progressOptions);
  let bytesRead = 0, tokens = 0, textBytes = 0;
  const pool = new TokenizePool(tokenizerPath, threads, valFraction);
  let tokenizer: { eosId: number; hash: string };
  try {
    tokenizer = await pool.ready; // the workers load the tokenizer; the main thread needs only these two facts
  } catch (error) {
    await pool.close();
    throw error;
  }
  const maxInFlight = threads * 3;
  const sources: Record<string, SourceStats> = {};

  // One queue across all sources, answered in submission order, so the workers never idle at a
  // source boundary; an end marker in the queue finishes a source once all its batches are packed.
  type Open = { writers: Record<Split, ShardWriter>; packers: Record<Split, Packer>; badLines: number };
  type Queued = { source: string; batch?: Promise<EncodedBatch> };
  const open = new Map<string, Open>();
  const queue: Queued[] = [];
  const deliverHead = async () => {
    const { source, batch } = queue.shift()!;
    const o = open.get(source)!;
    if (!batch) {
      const stats: SourceStats = { train: o.packers.train.finish(), val: o.packers.val.finish(), badLines: o.badLines };
      stats.train.shards = o.writers.train.finish();
      stats.val.shards = o.writers.val.finish();
      sources[source] = stats;
      open.delete(source);
      return;
    }
    const encoded = await batch;
    let at = 0;
    for (let d = 0; d < encoded.lengths.length; d++) {
      const n = encoded.lengths[d]!;
      o.packers[encoded.val[d] ? 'val' : 'train'].addDocument(encoded.ids.subarray(at, at + n));
      at += n;
      tokens += n + 1;
    }
    progressOptions.label = `prepare ${name} ${source}  ${formatTokens(tokens)} tokens`;
  };

  try {
    for (const source of listing.sources) {
      const shardBytes = options.shardBytes ?? DEFAULT_SHARD_BYTES;
      const writers: Record<Split, ShardWriter> = {
        train: new ShardWriter(options.output, `${source}/train.${name}`, seqLen, shardBytes),
        val: new ShardWriter(options.output, `${source}/val.${name}`, seqLen, shardBytes),
      };
      const o: Open = {
        writers,
        packers: {
          train: new Packer(seqLen, tokenizer.eosId, (x) => writers.train.write(x), `source ${source}`),
          val: new Packer(seqLen, tokenizer.eosId, (x) => writers.val.write(x), `source ${source}`),
        },
        badLines: 0,
      };
      open.set(source, o);
      let texts: string[] = [];
      let chars = 0;
      const flush = async () => {
        if (texts.length > 0) queue.push({ source, batch: pool.submit(texts) });
        texts = [];
        chars = 0;
        while (queue.length >= maxInFlight) await deliverHead();
      };
      for (const file of mine.filter((f) => f.source === source)) {
        const docs = readDocuments(join(options.input, file.path), {
          onBadLine: options.onBadLine ?? 'fail',
          report: (f, line, problem) => {
            o.badLines++;
            if (options.onBadLine === 'skip') notice(`${f}:${line}: ${problem} (skipped)`);
          },
          onBytes: (n) => {
            bytesRead += n;
            progress.set(bytesRead);
          },
        });
        for await (const doc of docs) {
          texts.push(doc.text);
          chars += doc.text.length;
          textBytes += doc.text.length;
          if (chars >= BATCH_CHARS || texts.length >= BATCH_DOCS) await flush();
        }
      }
      await flush();
      queue.push({ source });
    }
    while (queue.length > 0) await deliverHead();
  } catch (error) {
    for (const o of open.values()) {
      o.writers.train.abort();
      o.writers.val.abort();
    }
    await Promise.allSettled(queue.map((q) => q.batch));
    throw error;
  } finally {
    await pool.close();
  }
  progress.finish();

  const part: PartManifest = {
    format: MANIFEST_FORMAT, tokenizerHash: tokenizer.hash, eosId: tokenizer.eosId, seqLen, dtype: 'uint16le', valFraction,
    parts: shard.count, sources, part: shard, listingDigest: listingDigest(listing.files), listingFiles: listing.files.length, inputs: mine,
  };
  await writeFileAtomic(partFile, JSON.stringify(part, null, 1) + '\n');
  const manifest = shard.count === 1 ? await mergeParts(options.output) : undefined;
  return { part, manifest, seconds: (Date.now() - started) / 1000, bytesRead, textChars: textBytes, tokens };
}

function formatTokens(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)}G` : n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : String(n);
}
