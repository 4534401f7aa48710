import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { UserError } from '../util/errors.js';
import type { EncodeReply, EncodeRequest } from './encode-worker.js';
import { readTokenizerFile } from './tokenizer-file.js';

/** Texts are sent to workers in batches of about this many UTF-16 units (small enough to balance). */
const BATCH_UNITS = 1 << 20;
/** Longer texts are cut (at safe places, see safeCuts) so that one big file can use every thread. */
const CUT_UNITS = 1 << 20;

/** A batch sent to a worker, waiting for its ids. */
interface BatchPart {
  resolve: (ids: Uint32Array, lengths: Uint32Array) => void;
  reject: (e: Error) => void;
}

/**
 * Where a text can be cut into parts that encode independently to the same ids: between "X\n" and
 * "Y", where X is a visible ASCII character and Y an ASCII letter or digit. The line feed is then a
 * whitespace run of one, not U+0020, before a non-space, which the pre-tokenizer makes a piece of its
 * own both inside the text and at the end of a part; Y starts the next piece either way; X, "\n" and
 * Y are NFC starters that compose with nothing; and no added token is cut as long as none contains a
 * line feed (the caller checks). A longer whitespace run before the cut would not do: at the end of
 * a part "\n\n" is one piece, inside the text it is two.
 */
function safeCuts(text: string, every: number): string[] {
  if (text.length <= every) return [text];
  const parts: string[] = [];
  let start = 0;
  while (text.length - start > every) {
    let cut = text.indexOf('\n', start + every);
    while (cut >= 0 && !(isVisibleAscii(text.charCodeAt(cut - 1)) && isAsciiAlnum(text.charCodeAt(cut + 1)))) {
      cut = text.indexOf('\n', cut + 1);
    }
    if (cut < 0) break;
    parts.push(text.slice(start, cut + 1));
    start = cut + 1;
  }
  parts.push(text.slice(start));
  return parts;
}

function isVisibleAscii(c: number): boolean {
  return c > 0x20 && c < 0x7f;
}

function isAsciiAlnum(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

/**
 * A pool of worker threads, each with its own copy of the tokenizer, for encoding many texts. Reuse
 * one pool for many batches (each worker spends ~0.2 s loading the tokenizer); close() it when done.
 */
export class TokenizerPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: Array<{ request: EncodeRequest; job: BatchPart }> = [];
  private readonly running = new Map<Worker, BatchPart>();
  private nextBatch = 0;
  private closed = false;
  private failure: Error | undefined;

  private constructor(readonly tokenizerJsonPath: string, threads: number, private readonly cutsAllowed: boolean) {
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(new URL('./encode-worker.js', import.meta.url), { workerData: { path: tokenizerJsonPath } });
      worker.on('message', (reply: EncodeReply) => this.onReply(worker, reply));
      worker.on('error', (e) => this.onFailure(e));
      worker.on('exit', (code) => {
        if (!this.closed) this.onFailure(new Error(`tokenizer worker exited with code ${code}`));
      });
      this.workers.push(worker);
      this.idle.push(worker);
    }
  }

  /**
   * Start `threads` workers (default: one per core). The tokenizer file is checked here, on this
   * thread, so a bad file is a FormatError from open() rather than a worker crash.
   */
  static async open(tokenizerJsonPath: string, options?: { threads?: number }): Promise<TokenizerPool> {
    const threads = options?.threads ?? availableParallelism();
    if (!Number.isInteger(threads) || threads < 1) throw new UserError(`threads must be a positive integer, got ${threads}`);
    const spec = readTokenizerFile(tokenizerJsonPath);
    const cutsAllowed = spec.addedTokens.every((t) => !t.content.includes('\n'));
    return new TokenizerPool(tokenizerJsonPath, threads, cutsAllowed);
  }

  get threads(): number {
    return this.workers.length;
  }

  /** The ids of every text, in order, as Uint32Arrays (the cheapest form to hash, pack or write). */
  async encodeBatchTyped(texts: readonly string[]): Promise<Uint32Array[]> {
    if (this.closed) throw new Error('TokenizerPool is closed');
    // Cut long texts so they spread over the workers; remember which parts belong to which text.
    const parts: string[] = [];
    const owner: number[] = [];
    texts.forEach((text, i) => {
      if (typeof text !== 'string') throw new UserError(`texts[${i}] is not a string`);
      for (const part of this.cutsAllowed ? safeCuts(text, CUT_UNITS) : [text]) {
        parts.push(part);
        owner.push(i);
      }
    });
    // Group consecutive parts into batches of about BATCH_UNITS and run them.
    const batches: Array<Promise<{ first: number; ids: Uint32Array; lengths: Uint32Array }>> = [];
    for (let first = 0; first < parts.length; ) {
      let last = first;
      let units = parts[first].length;
      while (last + 1 < parts.length && units + parts[last + 1].length <= BATCH_UNITS) units += parts[++last].length;
      const slice = parts.slice(first, last + 1);
      const start = first;
      batches.push(new Promise((resolve, reject) => {
        this.submit(slice, { resolve: (ids, lengths) => resolve({ first: start, ids, lengths }), reject });
      }));
      first = last + 1;
    }
    const results = await Promise.all(batches);
    // Count each text's ids, then copy the parts' ids into one array per text.
    const partIds: Uint32Array[] = new Array(parts.length);
    for (const { first, ids, lengths } of results) {
      let at = 0;
      for (let k = 0; k < lengths.length; k++) {
        partIds[first + k] = ids.subarray(at, at + lengths[k]);
        at += lengths[k];
      }
    }
    const sizes = new Array<number>(texts.length).fill(0);
    for (let p = 0; p < parts.length; p++) sizes[owner[p]] += partIds[p].length;
    const out = sizes.map((n) => new Uint32Array(n));
    const filled = new Array<number>(texts.length).fill(0);
    for (let p = 0; p < parts.length; p++) {
      out[owner[p]].set(partIds[p], filled[owner[p]]);
      filled[owner[p]] += partIds[p].length;
    }
    return out;
  }

  /** The ids of every text, in order; the same as Tokenizer.encode on each. */
  async encodeBatch(texts: readonly string[]): Promise<number[][]> {
    return (await this.encodeBatchTyped(texts)).map((ids) => Array.from(ids));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private submit(texts: string[], job: BatchPart): void {
    if (this.failure) return job.reject(this.failure);
    this.queue.push({ request: { batch: this.nextBatch++, texts }, job });
    this.dispatch();
  }

  private dispatch(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const worker = this.idle.pop()!;
      const { request, job } = this.queue.shift()!;
      this.running.set(worker, job);
      worker.postMessage(request);
    }
  }

  private onReply(worker: Worker, reply: EncodeReply): void {
    const job = this.running.get(worker);
    this.running.delete(worker);
    this.idle.push(worker);
    if (job) {
      if (reply.error) job.reject(Object.assign(new UserError(reply.error.message), { name: reply.error.name }));
      else job.resolve(reply.ids!, reply.lengths!);
    }
    this.dispatch();
  }

  private onFailure(e: Error): void {
    this.failure ??= e;
    for (const job of this.running.values()) job.reject(e);
    this.running.clear();
    for (const { job } of this.queue.splice(0)) job.reject(e);
  }
}

/** Encode many texts on worker threads (default: one per core); the same ids as Tokenizer.encode. */
export async function encodeParallel(
  tokenizerJsonPath: string,
  texts: string[],
  options?: { threads?: number },
): Promise<number[][]> {
  const pool = await TokenizerPool.open(tokenizerJsonPath, options);
  try {
    return await pool.encodeBatch(texts);
  } finally {
    await pool.close();
  }
}
