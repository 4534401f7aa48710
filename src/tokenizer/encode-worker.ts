/**
 * Worker thread of TokenizerPool: loads the tokenizer once, then encodes batches of texts and sends
 * back all their ids in one transferable buffer (copying one typed array is far cheaper than
 * structured-cloning millions of numbers).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Tokenizer } from './tokenizer.js';

export interface EncodeRequest {
  batch: number;
  texts: string[];
}

export interface EncodeReply {
  batch: number;
  ids?: Uint32Array; // the ids of all texts, one after another
  lengths?: Uint32Array; // how many ids each text has
  error?: { message: string; name: string };
}

const port = parentPort;
if (!port) throw new Error('encode-worker.js must run as a worker thread');

let tokenizer: Tokenizer | undefined;
let loadError: Error | undefined;
try {
  tokenizer = Tokenizer.fromFile((workerData as { path: string }).path);
} catch (e) {
  loadError = e as Error;
}

port.on('message', (request: EncodeRequest) => {
  if (!tokenizer) {
    const e = loadError ?? new Error('tokenizer not loaded');
    port.postMessage({ batch: request.batch, error: { message: e.message, name: e.name } } satisfies EncodeReply);
    return;
  }
  const out: number[] = [];
  const lengths = new Uint32Array(request.texts.length);
  for (let i = 0; i < request.texts.length; i++) {
    const before = out.length;
    tokenizer.encodeInto(request.texts[i], out);
    lengths[i] = out.length - before;
  }
  const ids = Uint32Array.from(out);
  port.postMessage({ batch: request.batch, ids, lengths } satisfies EncodeReply, [ids.buffer, lengths.buffer]);
});
