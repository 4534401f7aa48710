#!/usr/bin/env node
// Differential fuzzing of our tokenizer against Hugging Face tokenizers (npm `tokenizers`, Rust core):
// random strings built from characters chosen to hit the edges (whitespace kinds and runs, the
// added space tokens, contractions, combining marks for NFC, characters Oniguruma and V8 classify
// differently, astral characters, lone surrogates, special tokens cut or glued to words) must give the
// same ids, and random id sequences (including cut UTF-8 characters) must decode to the same text.
//
// Usage: npm run build && node bench/tools/tokenizer-fuzz.mjs /tmp/hf-tok [count] [seed]
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [hfDir = '/tmp/hf-tok', countArg = '20000', seedArg = '1'] = process.argv.slice(2);
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const tokenizerJson = join(root, '..', 'shared', 'fixtures', 'mosaic-gpt-tiny', 'tokenizer.json');
const require = createRequire(join(hfDir, 'package.json'));
const hf = require('tokenizers').Tokenizer.fromFile(tokenizerJson);
const { Tokenizer } = await import(join(root, 'dist', 'src', 'tokenizer', 'index.js'));
const ours = Tokenizer.fromFile(tokenizerJson);

let seed = Number(seedArg);
const rand = () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = (xs) => xs[Math.floor(rand() * xs.length)];
const atoms = [
  ' ', ' ', ' ', '  ', '   ', ' '.repeat(25), '\t', '\n', '\r\n', '\n\n', '\u00a0', '\u3000', '\u0085', '\ufeff', '\u2028', '\u000b', '\u000c',
  'a', 'Z', 'word', 'The', 'é', 'e\u0301', 'A\u030a', '\u0301', 'ß', 'ﬁ', '中文', 'ひらがな', '한국어', 'العربية', 'Ω', 'ǅ',
  '0', '42', '3.14', '٣', '½', '²', 'Ⅻ', "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'", '"', '.', ',', '!?', '...',
  '-', '_', '==', '=>', '{', '}', '()', '[]', '<', '>', '|', '<|', '|>', '<|endoftext|>', '<|padding|>', '<|endoftext', 'endoftext|>',
  '🎉', '👩‍💻', '🇫🇷', '𝔸', '𝟙', '\ud800', '\udc00', '\u0888', '\ua7ce', '\u{10940}', '\u{2ebf0}', '\u200b', '\u200d', '\u0000', '\u007f',
];
const count = Number(countArg);
let bad = 0;
const texts = [];
for (let n = 0; n < count; n++) {
  let s = '';
  const len = Math.floor(rand() * 24);
  for (let i = 0; i < len; i++) s += pick(atoms);
  texts.push(s);
}
const encodings = await hf.encodeBatch(texts, { addSpecialTokens: false });
texts.forEach((s, i) => {
  const want = encodings[i].getIds();
  const got = ours.encode(s);
  if (got.length !== want.length || got.some((x, k) => x !== want[k])) {
    if (bad++ < 10) console.log('encode differs:', JSON.stringify(s), got, want);
  }
});
// Decoding: random ids (skipping none or the special ones) and cut-up encodings.
for (let n = 0; n < count / 10; n++) {
  const ids = n % 2 === 0
    ? Array.from({ length: 1 + Math.floor(rand() * 12) }, () => Math.floor(rand() * 50277))
    : ours.encode(pick(texts) + pick(texts)).filter(() => rand() < 0.7);
  for (const skip of [false, true]) {
    const want = await hf.decode(ids, skip);
    const got = ours.decode(ids, { skipSpecialTokens: skip });
    if (got !== want && bad++ < 20) console.log('decode differs:', ids, JSON.stringify(got), JSON.stringify(want));
  }
}
console.log(`${count} encodes and ${count / 5} decodes compared: ${bad} differences`);
process.exit(bad ? 1 : 0);
