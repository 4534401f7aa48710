import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { parseDuration, toBatches } from '../src/train/duration.js';
import { lrFactor } from '../src/train/schedule.js';
import { readTrainConfig, resolveRun } from '../src/train/config.js';
import { ConfigError } from '../src/util/errors.js';
import { projectRoot } from './fixtures.js';

test('Composer durations convert to batches', () => {
  const g = { samplesPerBatch: 2200, tokensPerBatch: 2200 * 2048, samplesPerEpoch: 22000, totalBatches: 1000 };
  assert.equal(toBatches(parseDuration('100ba', 'x'), g, 'x'), 100);
  assert.equal(toBatches(parseDuration('4505600tok', 'x'), g, 'x'), 1);
  assert.equal(toBatches(parseDuration('1ep', 'x'), g, 'x'), 10);
  assert.equal(toBatches(parseDuration('0.5dur', 'x'), g, 'x'), 500);
  assert.throws(() => parseDuration('100 steps', 'max_duration'), /max_duration/);
});

test('schedules: linear warm-up from 0, then cosine to alpha_f, linear decay, constant', () => {
  const cos = { kind: 'cosine_with_warmup' as const, warmup: 100, max: 1100, alphaI: 1, alphaF: 0.1 };
  assert.equal(lrFactor(cos, 0), 0);
  assert.equal(lrFactor(cos, 50), 0.5);
  assert.equal(lrFactor(cos, 100), 1);
  assert.ok(Math.abs(lrFactor(cos, 600) - 0.55) < 1e-12);
  assert.ok(Math.abs(lrFactor(cos, 1100) - 0.1) < 1e-12);
  assert.ok(Math.abs(lrFactor({ ...cos, kind: 'linear_decay_with_warmup', alphaF: 0 }, 600) - 0.5) < 1e-12);
  assert.equal(lrFactor({ ...cos, kind: 'constant_with_warmup', alphaI: 0.3 }, 900), 0.3);
});

test('the seed run YAML resolves to the seed run', () => {
  const p = readTrainConfig(join(projectRoot, 'yamls', 'mpt-1b-redpajama-200b.yaml'));
  const run = resolveRun(p, null);
  assert.equal(run.model.dModel, 2048);
  assert.equal(run.model.nLayers, 24);
  assert.equal(run.model.vocabSize, 50432);
  assert.equal(run.seqLen, 2048);
  assert.equal(run.globalBatch, 2200);
  assert.equal(run.maxBatches, Math.ceil(200e9 / (2200 * 2048)));
  assert.deepEqual(run.optimizer, { kind: 'decoupled_adamw', lr: 2e-4, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0 });
  assert.equal(run.schedule.warmup, 100);
  assert.equal(run.schedule.alphaF, 0.1);
  assert.equal(run.clipNorm, 1);
});

test('unknown keys are errors that name the key', () => {
  const yaml = join(projectRoot, 'yamls', 'tiny-cpu.yaml');
  assert.throws(() => readTrainConfig(yaml, ['trainer=1']), (e: Error) => e instanceof ConfigError && /unknown key "trainer"/.test(e.message));
  assert.throws(() => readTrainConfig(yaml, ['optimizer.momentum=0.9']), /optimizer: unknown key "momentum"/);
  assert.throws(() => readTrainConfig(yaml, ['scheduler.name=step']), /unknown scheduler "step"/);
});

test('paths in the YAML are relative to its folder, paths given as overrides to the working folder; hub names stay', () => {
  const yaml = join(projectRoot, 'yamls', 'mpt-1b-redpajama-200b.yaml');
  const inFile = readTrainConfig(yaml);
  assert.equal(inFile.settings.saveFolder, join(projectRoot, 'checkpoints', 'mpt-1b-redpajama-200b'));
  assert.equal((inFile.trainLoader.dataset as Record<string, unknown>).local, '../redpajama-tokens'); // the loader resolves it against the YAML
  assert.equal(inFile.settings.run.tokenizer, 'EleutherAI/gpt-neox-20b');
  const typed = readTrainConfig(yaml, ['save_folder=runs/a', 'train_loader.dataset.local=tokens', 'tokenizer.name=EleutherAI/gpt-neox-20b']);
  assert.equal(typed.settings.saveFolder, join(process.cwd(), 'runs', 'a'));
  assert.equal((typed.trainLoader.dataset as Record<string, unknown>).local, join(process.cwd(), 'tokens'));
  assert.equal(typed.settings.run.tokenizer, 'EleutherAI/gpt-neox-20b');
  assert.equal(readTrainConfig(yaml, ['model.pretrained=mosaicml/mpt-1b-redpajama-200b']).settings.pretrained, 'mosaicml/mpt-1b-redpajama-200b');
  // A local tokenizer folder typed relative to the working folder is found there.
  const cwd = process.cwd();
  try {
    process.chdir(projectRoot);
    const local = readTrainConfig(yaml, ['tokenizer.name=models/mpt-demo']);
    assert.equal(local.settings.run.tokenizer, join(projectRoot, 'models', 'mpt-demo'));
  } finally {
    process.chdir(cwd);
  }
});
