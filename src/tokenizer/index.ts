/**
 * GPT-NeoX-20B byte-level BPE with exactly Hugging Face tokenizers' ids (checked against 0.23.2).
 *
 *   const tok = Tokenizer.fromFolder(modelDir);        // or Tokenizer.fromFile('…/tokenizer.json')
 *   tok.encode('Hello world');                          // [12092, 1533]; no BOS/EOS added
 *   tok.decode(ids, { skipSpecialTokens: true });
 *   const s = tok.streamDecoder(); s.push(id) … s.flush();   // generation: whole characters only
 *   await encodeParallel(path, texts);                  // worker threads, one per core
 *   const pool = await TokenizerPool.open(path); await pool.encodeBatchTyped(texts); await pool.close();
 */
export { Tokenizer } from './tokenizer.js';
export { StreamDecoder } from './stream-decoder.js';
export { encodeParallel, TokenizerPool } from './parallel.js';
export { preTokenize } from './pretokenize.js';
