import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { openMixture } from '../src/data/mixture.js';
import { openEvalData } from '../src/train/data-source.js';
import { trainFromYaml } from '../src/train/from-yaml.js';
import { ConfigError } from '../src/util/errors.js';
import { syntheticDataset } from './data/synthetic-dataset.js';
import { projectRoot } from './fixtures.js';

const yaml = join(projectRoot, 'yamls', 'tiny-cpu.yaml');
const types = join(projectRoot, 'node_modules', '@types', 'node');
const backend = new CpuBackend({ threads: 2 });

test('a bytes eval_loader serves every window of its files, in order', () => {
  const file = join(types, 'path.d.ts');
  const bytes = readFileSync(file);
  const set = openEvalData({ name: 'bytes', dataset: { paths: [file] } }, yaml, 64, 256);
  assert.equal(set.samples, Math.floor(bytes.length / 64));
  assert.equal(set.batches(4), Math.floor(set.samples / 4));
  const b = set.batch(1, 4);
  assert.equal(b.rows, 4);
  assert.deepEqual(Array.from(b.tokens), Array.from(bytes.subarray(4 * 64, 8 * 64)));
});

test('a text eval_loader serves the prepared folder\'s held-out split, as the mixture does', () => {
  const root = syntheticDataset({ a: { train: 5, val: 3 }, b: { train: 4, val: 4 } }, 8);
  try {
    const set = openEvalData({ name: 'text', dataset: { local: root, split: 'val' } }, yaml, 8, 256);
    const mixture = openMixture({ dataset: root, seed: 1, globalBatch: 2, weights: { a: 1, b: 1 } });
    assert.equal(set.samples, 7);
    for (let i = 0; i < set.batches(2); i++) assert.deepEqual(set.batch(i, 2).tokens, mixture.validation.batch(i, 2).tokens);
    mixture.close();
    set.close();
    assert.throws(() => openEvalData({ name: 'text', dataset: { local: root } }, yaml, 16, 256), /eval_loader\.dataset\.local: the dataset was prepared with 8-token samples/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('bad eval_loader sections are errors that name the key', () => {
  const file = join(types, 'path.d.ts');
  assert.throws(() => openEvalData({ name: 'text', dataset: { local: '/x', split: 'train' } }, yaml, 64, 256),
    (e: Error) => e instanceof ConfigError && /eval_loader\.dataset\.split/.test(e.message));
  assert.throws(() => openEvalData({ name: 'bytes', dataset: { paths: [file], val_fraction: 0.1 } }, yaml, 64, 256), /eval_loader\.dataset: unknown key "val_fraction"/);
  assert.throws(() => openEvalData({ name: 'json', dataset: {} }, yaml, 64, 256), /eval_loader\.name: "json" is not a loader/);
  assert.throws(() => openEvalData({ name: 'bytes', dataset: { paths: [file] } }, yaml, 64, 100), /byte tokens need vocab_size/);
  assert.throws(() => openEvalData({ name: 'bytes', dataset: { paths: [file] }, shuffle: true }, yaml, 64, 256), /eval_loader: unknown key "shuffle"/);
});

test('mpt train evaluates on the eval_loader\'s data and trains the same either way', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-evalloader-'));
  try {
    const run = async (evalFile: string | null) => {
      const config = join(dir, `run-${evalFile ? evalFile.replace(/\W/g, '_') : 'default'}.yaml`);
      let text = readFileSync(yaml, 'utf8').replace(/\.\.\/node_modules/g, join(projectRoot, 'node_modules')).replace(/^save_folder:.*$/m, '').replace(/^autoresume:.*$/m, '');
      if (evalFile) text += `\neval_loader:\n  name: bytes\n  dataset:\n    paths: [${join(types, evalFile)}]\n`;
      writeFileSync(config, text);
      const notes: string[] = [];
      const r = await trainFromYaml(config, ['max_duration=2ba', 'eval_interval=1ba', 'global_train_batch_size=4', 'device_train_microbatch_size=4',
        'device_eval_batch_size=4', 'eval_subset_num_batches=2', `save_folder=${join(dir, 'ck')}`, 'save_interval=100ba'], { backend, log: (l) => notes.push(l) });
      rmSync(join(dir, 'ck'), { recursive: true, force: true });
      return { losses: r.losses.map((l) => l.loss), evals: r.evals.map((e) => e.loss), notes };
    };
    const own = await run(null), path = await run('path.d.ts'), again = await run('path.d.ts'), url = await run('url.d.ts');
    assert.equal(path.evals.length, 2);
    assert.deepEqual(path.losses, own.losses, 'the eval_loader must not change training');
    assert.deepEqual(url.losses, own.losses);
    assert.deepEqual(again.evals, path.evals, 'evaluation is deterministic');
    assert.notDeepEqual(path.evals, own.evals, 'with an eval_loader, the held-out split of the training data is not what is scored');
    assert.notDeepEqual(url.evals, path.evals);
    assert.ok(path.notes.some((n) => /evaluation: \d+ samples of the eval_loader/.test(n)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
