import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { trainFromYaml } from '../src/train/from-yaml.js';
import { datasetOfRows } from './data/synthetic-dataset.js';
import { ref, referenceDir as dir } from './training-reference.js';

// Fine-tuning through `mpt train` (model.pretrained: a model folder), checked against the original
// code: the fixture's reference starts from these weights on this 2×32 batch, clips at 1.0 and takes
// torch AdamW steps (lr 1e-3, betas 0.9/0.95, eps 1e-8, no decay). With the batch as the whole training
// set (global batch 2 = one epoch), every step sees exactly those two rows, so the run's losses must be
// the reference's loss and the losses of its steps 2–6.
test('model.pretrained fine-tunes from the folder\'s weights: the losses of the original code\'s AdamW steps', async () => {
  const a = ref.adamw;
  const data = datasetOfRows('fixture', ref.train.input_ids);
  const work = mkdtempSync(join(tmpdir(), 'mpt-finetune-'));
  try {
    const yaml = join(work, 'finetune.yaml');
    writeFileSync(yaml, [
      'max_seq_len: 32',
      'seed: 3',
      'model:',
      `  pretrained: ${dir}`,
      'train_loader:',
      '  name: text',
      '  dataset:',
      `    local: ${data}`,
      '    weights: {fixture: 1}',
      `optimizer: {name: adamw, lr: ${a.lr}, betas: [${a.betas.join(', ')}], eps: ${a.eps}, weight_decay: ${a.weight_decay}}`,
      'scheduler: {name: constant_with_warmup, t_warmup: 0ba}',
      `algorithms: {gradient_clipping: {clipping_type: norm, clipping_threshold: ${a.clip_grad_norm}}}`,
      'max_duration: 6ba',
      'global_train_batch_size: 2',
      'device_train_microbatch_size: 2',
      'precision: fp32',
      `save_folder: ${join(work, 'out')}`,
      '',
    ].join('\n'));
    const lines: string[] = [];
    const r = await trainFromYaml(yaml, [], { backend: new CpuBackend({ threads: 2 }), log: (l) => lines.push(l) });
    assert.ok(lines.some((l) => l.includes(`starting from pretrained weights ${dir}`)), lines.join('\n'));
    const losses = r.losses.map((l) => l.loss);
    assert.equal(losses.length, 6);
    const want = [ref.train.loss, ...ref.adamw.losses_steps_2_to_6];
    losses.forEach((loss, i) => assert.ok(Math.abs(loss - want[i]!) < 1e-4, `step ${i + 1}: loss ${loss}, the original code ${want[i]}`));
  } finally {
    rmSync(work, { recursive: true, force: true });
    rmSync(data, { recursive: true, force: true });
  }
});
