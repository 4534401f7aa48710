import { Worker } from 'node:worker_threads';
import { UserError } from '../util/errors.js';
import type { WorkerInit, WorkerReply, WorkerRequest } from './tokenize-worker.js';

export interface TokenizerInfo {
  eosId: number;
  hash: string;
}

export interface EncodedBatch {
  ids: Uint32Array;
  lengths: Uint32Array;
  val: Uint8Array;
}

/**
 * Worker threads that tokenize batches of documents. Batches are answered in the order they were
 * submitted (`submit` returns promises; the caller awaits them in order), and at most
 * `maxInFlight` are outstanding so reading cannot run ahead of tokenizing without bound.
 */
export class TokenizePool {
  private readonly workers: Worker[] = [];
  private readonly busy: number[] = [];
  private readonly waiting = new Map<number, { resolve: (b: EncodedBatch) => void; reject: (e: Error) => void; worker: number }>();
  private seq = 0;
  private failure: Error | null = null;
  private readyCount = 0;
  private onReady!: { resolve: (t: TokenizerInfo) => void; reject: (e: Error) => void };
  /** Resolves once every worker has loaded the tokenizer; rejects if one cannot. */
  readonly ready: Promise<TokenizerInfo>;

  constructor(tokenizerPath: string, readonly threads: number, valFraction: number) {
    if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`threads must be a positive integer, got ${threads}`);
    this.ready = new Promise((resolve, reject) => (this.onReady = { resolve, reject }));
    this.ready.catch(() => {}); // also reported through submit; avoid an unhandled rejection
    const init: WorkerInit = { tokenizerPath, valFraction };
    for (let i = 0; i < threads; i++) {
      // Workers inherit the parent's Node flags; --input-type (set by `node --input-type=module -e`) makes them fail.
      const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
      const worker = new Worker(new URL('./tokenize-worker.js', import.meta.url), { workerData: init, execArgv });
      worker.on('message', (reply: WorkerReply) => this.answer(reply));
      worker.on('error', (error) => this.fail(this.readyCount < threads ? new UserError(`cannot load the tokenizer ${tokenizerPath}: ${error.message}`) : error));
      worker.on('exit', (code) => {
        if (code !== 0) this.fail(new Error(`tokenizer worker ${i} exited with code ${code}`));
      });
      this.workers.push(worker);
      this.busy.push(0);
    }
  }

  get inFlight(): number {
    return this.waiting.size;
  }

  submit(texts: string[]): Promise<EncodedBatch> {
    if (this.failure) return Promise.reject(this.failure);
    let target = 0;
    for (let i = 1; i < this.workers.length; i++) if (this.busy[i]! < this.busy[target]!) target = i;
    const seq = this.seq++;
    const promise = new Promise<EncodedBatch>((resolve, reject) => this.waiting.set(seq, { resolve, reject, worker: target }));
    this.busy[target]!++;
    const request: WorkerRequest = { seq, texts };
    this.workers[target]!.postMessage(request);
    return promise;
  }

  async close(): Promise<void> {
    const workers = this.workers.splice(0);
    this.failure ??= new Error('tokenizer pool closed');
    await Promise.all(workers.map((w) => w.terminate()));
  }

  private answer(reply: WorkerReply): void {
    if ('ready' in reply) {
      if (++this.readyCount === this.workers.length) this.onReady.resolve({ eosId: reply.eosId, hash: reply.hash });
      return;
    }
    const entry = this.waiting.get(reply.seq);
    if (!entry) return;
    this.waiting.delete(reply.seq);
    this.busy[entry.worker]!--;
    if ('error' in reply) entry.reject(new Error(`tokenizer worker failed: ${reply.error}`));
    else entry.resolve({ ids: reply.ids, lengths: reply.lengths, val: reply.val });
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    this.onReady.reject(error);
    for (const entry of this.waiting.values()) entry.reject(error);
    this.waiting.clear();
  }
}
