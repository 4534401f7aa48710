export { Tokenizer } from './tokenizer.js';
export { StreamDecoder } from './stream-decoder.js';
export { encodeParallel, TokenizerPool } from './parallel.js';
export { preTokenize } from './pretokenize.js';
