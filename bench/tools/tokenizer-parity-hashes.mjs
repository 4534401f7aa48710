#!/usr/bin/env node
// Writes test/data/tokenizer-parity.json: for every text file that `npm ci` puts in node_modules
// (pinned by package-lock.json), the token count and sha256 of the ids that Hugging Face tokenizers
// itself gives (npm `tokenizers` 0.23.2, the Rust core, encodeBatch with addSpecialTokens: false) with
// the GPT-NeoX-20B tokenizer.json of the fixtures. test/tokenizer-parity.test.ts checks our ids
// against these. The ids are hashed as uint32 little-endian; each file is read as UTF-8 into one
// JavaScript string and passed whole.
//
// Usage: npm install --prefix /tmp/hf-tok tokenizers@0.23.2
//        node bench/tools/tokenizer-parity-hashes.mjs /tmp/hf-tok
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const hfDir = process.argv[2] ?? '/tmp/hf-tok';
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const tokenizerJson = join(root, '..', 'shared', 'fixtures', 'mosaic-gpt-tiny', 'tokenizer.json');
const require = createRequire(join(hfDir, 'package.json'));
const { Tokenizer } = require('tokenizers');
const version = require('tokenizers/package.json').version;

// Every regular file under node_modules that is text: no NUL byte, not a dotfile (npm writes
// node_modules/.package-lock.json itself), under 8 MB (the native tsc binary and .node files go).
// file_sha256 (first 16 hex digits) tells a changed file apart from a tokenizer mismatch.
function walk(dir, out) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (e.isFile()) out.push(p);
  }
  return out;
}
const files = walk(join(root, 'node_modules'), [])
  .map((p) => ({ p, bytes: readFileSync(p) }))
  .filter(({ bytes }) => bytes.length > 0 && bytes.length < 8e6 && !bytes.includes(0))
  .sort((a, b) => (a.p < b.p ? -1 : 1));

const tokenizer = Tokenizer.fromFile(tokenizerJson);
const texts = files.map(({ bytes }) => bytes.toString('utf8'));
const encodings = await tokenizer.encodeBatch(texts, { addSpecialTokens: false });
const sha256 = (data) => createHash('sha256').update(data).digest('hex');
const entries = files.map(({ p, bytes }, i) => {
  const ids = encodings[i].getIds();
  const le = Buffer.alloc(ids.length * 4);
  ids.forEach((id, k) => le.writeUInt32LE(id, k * 4));
  return { path: relative(root, p), bytes: bytes.length, file_sha256: sha256(bytes).slice(0, 16), tokens: ids.length, ids_sha256: sha256(le) };
});
const out = {
  produced_by: `Hugging Face tokenizers ${version} (npm, Rust core), encodeBatch(texts, { addSpecialTokens: false }); ` +
    'ids hashed as uint32 little-endian; by bench/tools/tokenizer-parity-hashes.mjs',
  tokenizer_sha256: sha256(readFileSync(tokenizerJson)),
  total_bytes: entries.reduce((a, e) => a + e.bytes, 0),
  total_tokens: entries.reduce((a, e) => a + e.tokens, 0),
  files: entries,
};
// One file per line keeps the JSON small and its diffs readable.
const { files: list, ...head } = out;
const text = JSON.stringify(head, null, 1).replace(/\n}$/, ',\n "files": [\n') +
  list.map((e) => '  ' + JSON.stringify(e)).join(',\n') + '\n ]\n}\n';
JSON.parse(text);
writeFileSync(join(root, 'test', 'data', 'tokenizer-parity.json'), text);
console.log(`${entries.length} files, ${(out.total_bytes / 1e6).toFixed(1)} MB, ${out.total_tokens} tokens`);
