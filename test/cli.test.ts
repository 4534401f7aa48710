// The CLI contract for bad input: one clear line naming the problem, a non-zero exit, no stack trace
// (unless --debug). And the happy paths' output shapes (--json is one document on stdout).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, symlinkSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixture, projectRoot } from './fixtures.js';

const tiny = fixture('mosaic-gpt-tiny');

function mpt(...args: string[]) {
  const r = spawnSync(process.execPath, [join(projectRoot, 'bin', 'mpt.js'), ...args], { encoding: 'utf8', input: '' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A copy of the tiny fixture folder (weights linked) where `edit` may break one file. */
function brokenFolder(edit: (dir: string) => void, weights = 'model.safetensors'): string {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-cli-'));
  for (const name of ['config.json', 'tokenizer.json']) copyFileSync(join(tiny, name), join(dir, name));
  symlinkSync(join(tiny, weights), join(dir, weights));
  edit(dir);
  return dir;
}

function assertOneLineError(r: ReturnType<typeof mpt>, pattern: RegExp) {
  assert.notEqual(r.code, 0, 'exit code must be non-zero');
  const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('mpt: no usable GPU') && !l.startsWith('mpt: running'));
  assert.equal(lines.length, 1, `one line expected on stderr, got:\n${r.stderr}`);
  assert.match(lines[0], /^mpt: error: /);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace without --debug');
}

const editConfig = (change: (c: Record<string, unknown>) => void) => (dir: string) => {
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  change(config);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
};

test('a missing model folder', () => {
  assertOneLineError(mpt('info', '--model', '/nonexistent/model'), /\/nonexistent\/model/);
});

test('an unknown model_type is named', () => {
  const dir = brokenFolder(editConfig((c) => { c.model_type = 'llama'; }));
  assertOneLineError(mpt('info', '--model', dir), /llama/);
});

test('malformed config JSON names the file', () => {
  const dir = brokenFolder((d) => writeFileSync(join(d, 'config.json'), '{"d_model": 64,'));
  assertOneLineError(mpt('info', '--model', dir), /config\.json/);
});

test('a truncated safetensors file names the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-cli-'));
  for (const name of ['config.json', 'tokenizer.json', 'model.safetensors']) copyFileSync(join(tiny, name), join(dir, name));
  truncateSync(join(dir, 'model.safetensors'), statSync(join(dir, 'model.safetensors')).size - 1000);
  assertOneLineError(mpt('generate', '--model', dir, '--device', 'cpu', 'hi'), /model\.safetensors.*truncated/);
});

test('a truncated pytorch_model.bin names the file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-cli-'));
  for (const name of ['config.json', 'tokenizer.json', 'pytorch_model.bin']) copyFileSync(join(tiny, name), join(dir, name));
  truncateSync(join(dir, 'pytorch_model.bin'), 5_000_000);
  assertOneLineError(mpt('generate', '--model', dir, '--device', 'cpu', 'hi'), /pytorch_model\.bin/);
});

test('a shape that does not match the config names the tensor', () => {
  const dir = brokenFolder(editConfig((c) => { c.mlp_ratio = 2; }));
  assertOneLineError(mpt('generate', '--model', dir, '--device', 'cpu', 'hi'), /mlp_up|mlp\.up|shape/);
});

test('an unsupported option is refused by name', () => {
  const dir = brokenFolder(editConfig((c) => { c.prefix_lm = true; }));
  assertOneLineError(mpt('info', '--model', dir), /prefix_lm/);
});

test('a token id out of range', () => {
  assertOneLineError(mpt('forward', '--model', tiny, '--device', 'cpu', '--ids', '1,50432'), /50432.*out of range/);
  assertOneLineError(mpt('generate', '--model', tiny, '--device', 'cpu', '--prompt-ids', '99999'), /99999.*out of range/);
});

test('a prompt longer than max_seq_len', () => {
  const ids = new Array(300).fill(510).join(',');
  assertOneLineError(mpt('generate', '--model', tiny, '--device', 'cpu', '--prompt-ids', ids), /300 tokens.*max_seq_len is 256/);
});

test('bad flags and commands', () => {
  assertOneLineError(mpt('generate', '--model', tiny, '--temperature', 'hot', 'x'), /--temperature must be a number/);
  assertOneLineError(mpt('generate', '--bogus'), /bogus/);
  assertOneLineError(mpt('frobnicate'), /unknown command "frobnicate"/);
  // A command of flags only refuses a stray argument instead of running on its defaults (here: the embedded model).
  assertOneLineError(mpt('info', tiny), /mpt info: unexpected argument ".*mosaic-gpt-tiny": it takes flags only/);
  assertOneLineError(mpt('eval', 'perplexity', '--model', tiny, 'data.txt'), /unexpected argument "data.txt"/);
});

test('without --model, generate runs the embedded default model', () => {
  const r = mpt('generate', '--device', 'cpu', '--temperature', '0', '-n', '6', '--json', 'The history of');
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.equal(doc.ids.length, 6);
  assert.ok(doc.text.length > 0);
  const info = JSON.parse(mpt('info', '--json').stdout);
  assert.match(info.folder, /models\/mpt-demo$/);
  assert.equal(info.weights_dtype, 'bfloat16');
});

test('--debug shows the stack trace', () => {
  const r = mpt('info', '--model', '/nonexistent/model', '--debug');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /\n\s+at /);
});

test('every command has --help', () => {
  for (const command of ['generate', 'forward', 'tokenize', 'detokenize', 'info']) {
    const r = mpt(command, '--help');
    assert.equal(r.code, 0);
    assert.match(r.stdout, new RegExp(`^mpt ${command} — `));
    assert.match(r.stdout, /--help/);
  }
});

test('--json output is one document on stdout', () => {
  const gen = mpt('generate', '--model', tiny, '--device', 'cpu', '--temperature', '0', '-n', '5', '--json', 'The quick brown fox');
  assert.equal(gen.code, 0, gen.stderr);
  const doc = JSON.parse(gen.stdout);
  assert.equal(doc.ids.length, 5);
  assert.equal(typeof doc.text, 'string');
  const fwd = mpt('forward', '--model', tiny, '--device', 'cpu', '--ids', '510,3158,8516', '--top-k', '5', '--json');
  const { positions } = JSON.parse(fwd.stdout);
  assert.equal(positions.length, 3);
  assert.deepEqual(positions[0][0].map((x: number) => Math.round(x)), [3079, 6]); // the reference's best first token
  const tok = mpt('tokenize', '--model', tiny, '--json', 'Hello world');
  assert.deepEqual(JSON.parse(tok.stdout), { ids: [12092, 1533] });
  assert.equal(mpt('detokenize', '--model', tiny, '12092,1533').stdout, 'Hello world\n');
});
