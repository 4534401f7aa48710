import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { inputFormat, readDocuments, type BadLinePolicy } from '../data/read-documents.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { FormatError, UserError } from '../util/errors.js';

/**
 * The token stream perplexity is computed over, read the way the data pipeline reads its inputs
 * (src/data/read-documents: .txt, .jsonl/.json with a `text` field, optionally .gz or .zst) and laid
 * out the way its concat-tokens packing lays them out: each document's tokens, then EOS. So the
 * windows of `mpt eval perplexity` over the same files are the samples the trainer evaluates.
 * Token shards (`.bin`, uint16 little-endian, as `mpt data prepare` writes) are taken as they are.
 */
export interface EvalTokens {
  tokens: Int32Array;
  /** UTF-8 bytes of the documents' text; null when some input was a token shard (no text to count). */
  bytes: number | null;
  documents: number;
  files: string[];
}

export interface ReadEvalOptions {
  onBadLine?: BadLinePolicy;
  /** Called with each file as it is started and the files in all. */
  onFile?: (file: string, index: number, count: number) => void;
}

/** A file or a folder (every input file under it, recursively, in sorted path order). */
export async function readEvalTokens(path: string, tokenizer: Tokenizer, options: ReadEvalOptions = {}): Promise<EvalTokens> {
  const files = await listEvalFiles(path);
  const chunks: Int32Array[] = [];
  let current: number[] = [];
  let total = 0, bytes: number | null = 0, documents = 0;
  const flush = () => {
    if (current.length === 0) return;
    chunks.push(Int32Array.from(current));
    total += current.length;
    current = [];
  };
  for (const [index, file] of files.entries()) {
    options.onFile?.(file, index, files.length);
    if (isTokenShard(file)) {
      flush();
      const shard = await readTokenShard(file);
      chunks.push(shard);
      total += shard.length;
      bytes = null;
      continue;
    }
    for await (const doc of readDocuments(file, { onBadLine: options.onBadLine ?? 'fail' })) {
      tokenizer.encodeInto(doc.text, current);
      current.push(tokenizer.eosId);
      if (bytes !== null) bytes += Buffer.byteLength(doc.text, 'utf8');
      documents++;
      if (current.length >= 1 << 20) flush();
    }
  }
  flush();
  const tokens = new Int32Array(total);
  let at = 0;
  for (const chunk of chunks) { tokens.set(chunk, at); at += chunk.length; }
  return { tokens, bytes, documents, files };
}

const isTokenShard = (file: string) => file.toLowerCase().endsWith('.bin');

async function listEvalFiles(path: string): Promise<string[]> {
  let stat;
  try {
    stat = await fs.stat(path);
  } catch {
    throw new UserError(`--data ${path}: no such file or folder`);
  }
  if (stat.isFile()) {
    if (!isTokenShard(path) && !inputFormat(path)) {
      throw new FormatError(path, 'not an evaluation input (expected .txt, .jsonl or .json, optionally .gz or .zst, or a .bin token shard)');
    }
    return [path];
  }
  const found: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = await fs.readdir(dir, { withFileTypes: true });
    for (const e of entries) {
      const full = join(dir, e.name);
      if (e.isDirectory()) await walk(full);
      else if (e.isFile() && (isTokenShard(e.name) || inputFormat(e.name))) found.push(full);
    }
  };
  await walk(path);
  found.sort();
  if (found.length === 0) throw new UserError(`--data ${path}: the folder holds no .txt, .jsonl, .json or .bin files`);
  return found;
}

async function readTokenShard(file: string): Promise<Int32Array> {
  const raw = await fs.readFile(file);
  if (raw.length % 2 !== 0) throw new FormatError(file, `a token shard holds uint16 ids, but its ${raw.length} bytes are an odd count (truncated?)`);
  const out = new Int32Array(raw.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = raw.readUInt16LE(2 * i);
  return out;
}
