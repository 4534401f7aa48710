import { parentPort, workerData } from 'node:worker_threads';
import { Tokenizer } from '../tokenizer/index.js';
import { inValidation } from './validation-split.js';

/**
 * One tokenizing thread of `mpt data prepare`: loads the engine's tokenizer itself (tokenizers are
 * not shared across threads) and answers batches of texts with their ids, concatenated, plus each
 * document's length and train/val split.
 */
export interface WorkerInit {
  tokenizerPath: string;
  valFraction: number;
}
export interface WorkerRequest {
  seq: number;
  texts: string[];
}
export type WorkerReply =
  | { ready: true; eosId: number; hash: string }
  | { seq: number; ids: Uint32Array; lengths: Uint32Array; val: Uint8Array }
  | { seq: number; error: string };

const init = workerData as WorkerInit;
const tokenizer = Tokenizer.fromFile(init.tokenizerPath);
// The main thread learns the EOS id and the tokenizer's hash from here, so it need not load its own copy.
parentPort!.postMessage({ ready: true, eosId: tokenizer.eosId, hash: tokenizer.hash } satisfies WorkerReply);

parentPort!.on('message', (request: WorkerRequest) => {
  try {
    const encoded = request.texts.map((t) => tokenizer.encode(t));
    const total = encoded.reduce((sum, e) => sum + e.length, 0);
    const ids = new Uint32Array(total);
    const lengths = new Uint32Array(encoded.length);
    const val = new Uint8Array(encoded.length);
    let at = 0;
    encoded.forEach((e, i) => {
      ids.set(e, at);
      at += e.length;
      lengths[i] = e.length;
      val[i] = inValidation(request.texts[i]!, init.valFraction) ? 1 : 0;
    });
    const reply: WorkerReply = { seq: request.seq, ids, lengths, val };
    parentPort!.postMessage(reply, [ids.buffer, lengths.buffer, val.buffer]);
  } catch (error) {
    const reply: WorkerReply = { seq: request.seq, error: (error as Error)?.stack ?? String(error) };
    parentPort!.postMessage(reply);
  }
});
