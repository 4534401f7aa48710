import { createReadStream, promises as fs } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import { FormatError } from '../util/errors.js';

/**
 * Streaming document readers for the input formats: JSON Lines (plain, .zst, .gz) with a `text`
 * field — every other field is the document's metadata — and plain-text files, each one document.
 * Nothing is read whole except a plain-text file (one document is one string anyway).
 */

export interface Document {
  text: string;
  /** The JSON object's other fields (absent for plain text). */
  meta?: Record<string, unknown>;
  /** 1-based line of a JSONL document; 1 for plain text. */
  line: number;
}

export type BadLinePolicy = 'fail' | 'skip';

export interface ReadOptions {
  onBadLine: BadLinePolicy;
  /** Told of every malformed line, whatever the policy, before it is skipped or thrown. */
  report?: (file: string, line: number, problem: string) => void;
  /** Raw (still compressed) bytes read from disk, for progress. */
  onBytes?: (n: number) => void;
}

export type InputKind = 'jsonl' | 'text';
export type Compression = 'none' | 'gzip' | 'zstd';

/** What a file name says it holds, or undefined for a file that is not an input. */
export function inputFormat(name: string): { kind: InputKind; compression: Compression } | undefined {
  const m = /\.(jsonl|json|txt)(\.gz|\.zst)?$/i.exec(name);
  if (!m) return undefined;
  const kind: InputKind = m[1]!.toLowerCase() === 'txt' ? 'text' : 'jsonl';
  const ext = m[2]?.toLowerCase();
  return { kind, compression: ext === '.gz' ? 'gzip' : ext === '.zst' ? 'zstd' : 'none' };
}

/** The file's bytes after decompression, chunk by chunk. Corrupt compressed data is a FormatError. */
export async function* decompressedChunks(path: string, compression: Compression, onBytes?: (n: number) => void): AsyncGenerator<Uint8Array> {
  const raw = createReadStream(path, { highWaterMark: 1 << 20 });
  if (compression === 'gzip') {
    const gunzip = createGunzip();
    raw.on('data', (c) => onBytes?.(c.length));
    raw.on('error', (e) => gunzip.destroy(e));
    raw.pipe(gunzip);
    try {
      for await (const chunk of gunzip) yield chunk as Uint8Array;
    } catch (error) {
      throw corrupt(path, 'gzip', error);
    }
    return;
  }
  if (compression === 'zstd') {
    let pending: Uint8Array[] = [];
    let ended = false;
    const zstd = new Decompress((data, final) => {
      pending.push(data);
      if (final) ended = true;
    });
    const drain = function* () {
      const out = pending;
      pending = [];
      yield* out;
    };
    for await (const chunk of raw) {
      onBytes?.(chunk.length);
      try {
        zstd.push(chunk as Uint8Array);
      } catch (error) {
        throw corrupt(path, 'zstd', error);
      }
      yield* drain();
    }
    try {
      zstd.push(new Uint8Array(0), true);
    } catch (error) {
      throw corrupt(path, 'zstd', error);
    }
    yield* drain();
    if (!ended) throw new FormatError(path, 'corrupt zstd data: the stream ends in the middle of a frame (truncated file?)');
    return;
  }
  for await (const chunk of raw) {
    onBytes?.(chunk.length);
    yield chunk as Uint8Array;
  }
}

function corrupt(path: string, what: string, error: unknown): Error {
  if (error instanceof FormatError) return error;
  const code = (error as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR') return error as Error;
  return new FormatError(path, `corrupt ${what} data (${(error as Error).message ?? error})`);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Documents of one input file, in file order. */
export async function* readDocuments(path: string, options: ReadOptions): AsyncGenerator<Document> {
  const format = inputFormat(path);
  if (!format) throw new FormatError(path, 'not an input file (expected .jsonl, .json, .txt, optionally .gz or .zst)');
  if (format.kind === 'text') {
    const parts: Uint8Array[] = [];
    for await (const chunk of decompressedChunks(path, format.compression, options.onBytes)) parts.push(chunk);
    let text: string;
    try {
      text = utf8.decode(Buffer.concat(parts));
    } catch {
      throw new FormatError(path, 'not valid UTF-8 text');
    }
    if (text.length > 0) yield { text, line: 1 };
    return;
  }
  yield* readJsonLines(path, format.compression, options);
}

async function* readJsonLines(path: string, compression: Compression, options: ReadOptions): AsyncGenerator<Document> {
  let lineNumber = 0;
  const bad = (problem: string): void => {
    options.report?.(path, lineNumber, problem);
    if (options.onBadLine === 'fail') {
      throw new FormatError(`${path}:${lineNumber}`, `${problem} (use --on-bad-line skip to skip such lines)`);
    }
  };
  const parseLine = (bytes: Uint8Array): Document | undefined => {
    lineNumber++;
    let text: string;
    try {
      text = utf8.decode(bytes);
    } catch {
      bad('line is not valid UTF-8');
      return undefined;
    }
    if (text.trim() === '') return undefined; // blank lines (a trailing newline, a spacer) are not documents
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      bad(`malformed JSON (${(error as Error).message})`);
      return undefined;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      bad('line is not a JSON object');
      return undefined;
    }
    const { text: body, ...meta } = value as Record<string, unknown>;
    if (body === undefined) {
      bad('missing "text" field');
      return undefined;
    }
    if (typeof body !== 'string') {
      bad(`"text" is ${body === null ? 'null' : typeof body}, expected a string`);
      return undefined;
    }
    return { text: body, meta, line: lineNumber };
  };
  // Pieces of a line that spans chunks; joined once when its newline arrives (no quadratic copying).
  let carry: Uint8Array[] = [];
  for await (const chunk of decompressedChunks(path, compression, options.onBytes)) {
    let start = 0;
    let nl = chunk.indexOf(10);
    while (nl !== -1) {
      let line = chunk.subarray(start, nl);
      if (carry.length > 0) {
        line = Buffer.concat([...carry, line]);
        carry = [];
      }
      const doc = parseLine(line);
      if (doc) yield doc;
      start = nl + 1;
      nl = chunk.indexOf(10, start);
    }
    if (start < chunk.length) carry.push(chunk.slice(start));
  }
  if (carry.length > 0) {
    const doc = parseLine(Buffer.concat(carry));
    if (doc) yield doc;
  }
}

/** Size of a file in bytes (for progress and for the deterministic split). */
export async function fileSize(path: string): Promise<number> {
  return (await fs.stat(path)).size;
}
