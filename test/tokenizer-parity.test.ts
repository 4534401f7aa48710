/*
 * Parity with Hugging Face tokenizers on 11 MB of real text: every text file that `npm ci` installs
 * under node_modules (pinned by package-lock.json: TypeScript's lib.*.d.ts, @types/node, koffi's C++
 * sources, yaml, READMEs, licences, ...).
 *
 * How the expected ids were obtained: `npm install --prefix /tmp/hf-tok tokenizers@0.23.2` (the
 * Hugging Face Rust core as a prebuilt Node binding, outside this repository), then
 * `node bench/tools/tokenizer-parity-hashes.mjs /tmp/hf-tok`, which reads each file as UTF-8 into one
 * string, calls `Tokenizer.fromFile(<fixtures>/mosaic-gpt-tiny/tokenizer.json).encodeBatch(texts,
 * { addSpecialTokens: false })` and stores per file the token count and the sha256 of the ids as
 * uint32 little-endian in test/data/tokenizer-parity.json. We encode the same strings with
 * encodeParallel (both cores; long files are cut and spread over the workers) and compare.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fixture, projectRoot } from './fixtures.js';
import { TokenizerPool } from '../src/tokenizer/index.js';

interface ParityFile { path: string; bytes: number; file_sha256: string; tokens: number; ids_sha256: string }
interface Parity { tokenizer_sha256: string; total_bytes: number; files: ParityFile[] }

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

test('ids equal Hugging Face tokenizers 0.23.2 on 11 MB of node_modules text', async () => {
  const expected = JSON.parse(readFileSync(join(projectRoot, 'test', 'data', 'tokenizer-parity.json'), 'utf8')) as Parity;
  const tokenizerPath = fixture('mosaic-gpt-tiny', 'tokenizer.json');
  assert.equal(sha256(readFileSync(tokenizerPath)), expected.tokenizer_sha256, 'the fixtures tokenizer.json changed');
  assert.ok(expected.total_bytes >= 10e6, 'the parity corpus must hold at least 10 MB');

  const texts: string[] = [];
  for (const f of expected.files) {
    const path = join(projectRoot, f.path);
    assert.ok(existsSync(path), `${f.path} is missing: run npm ci (or regenerate test/data/tokenizer-parity.json if package-lock.json changed)`);
    const bytes = readFileSync(path);
    assert.equal(sha256(bytes).slice(0, 16), f.file_sha256, `${f.path} is not the file the expected ids were made from: regenerate test/data/tokenizer-parity.json`);
    texts.push(bytes.toString('utf8'));
  }

  const pool = await TokenizerPool.open(tokenizerPath, { threads: 2 });
  let got: Uint32Array[];
  try {
    got = await pool.encodeBatchTyped(texts);
  } finally {
    await pool.close();
  }
  const wrong: string[] = [];
  expected.files.forEach((f, i) => {
    const ids = got[i];
    // Uint32Array bytes are little-endian on every platform Node supports (x64, arm64).
    const hash = sha256(new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength));
    if (ids.length !== f.tokens || hash !== f.ids_sha256) wrong.push(`${f.path}: ${ids.length} tokens, expected ${f.tokens}`);
  });
  assert.deepEqual(wrong, [], `${wrong.length} of ${expected.files.length} files tokenize differently from Hugging Face`);
});
