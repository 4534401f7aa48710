// Deferred AdamW (TrainStep.overlapAdamw, MPT_TRAIN_OVERLAP_ADAMW=1) on the CPU, where its groups run
// one after another at the forward's hooks (no streams): the same losses, gradient norms, weights and
// moments as the update at the end of each step, bit for bit — with gradient accumulation, a switch in
// the middle of a run, and a checkpoint/resume in the middle of one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Tensor } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { parameterShapes, type MptConfig } from '../src/model/config.js';
import { structureParams } from '../src/model/params.js';
import { TrainingGraph } from '../src/model/training-forward.js';
import { trainFromYaml } from '../src/train/from-yaml.js';
import { DEFAULT_INIT, initialWeights } from '../src/train/init.js';
import { AdamW } from '../src/train/optimizer.js';
import { TrainStep, updateGroups, type StepResult } from '../src/train/step.js';
import { projectRoot } from './fixtures.js';

const backend = new CpuBackend({ threads: 2 });

/** Every group of updateGroups shows up: learned positions, biases, QK LayerNorm, an untied output table. */
const config: MptConfig = {
  dModel: 24, nHeads: 3, nLayers: 3, expansionRatio: 2, maxSeqLen: 16, vocabSize: 37,
  alibi: false, alibiBiasMax: 8, alibiSlopes: 'plain', learnedPosEmb: true, qkLn: true, clipQkv: null,
  softmaxScale: null, noBias: false, logitScale: null, layerNormEps: 1e-5, tieWordEmbeddings: false, embeddingFraction: 1,
};
const ROWS = 3, SEQ = 13, MICRO = 2;

/** Fresh random token ids (a fixed generator: both runs see the same batches). */
function batches(steps: number): Int32Array[][] {
  let s = 12345;
  const next = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
  return Array.from({ length: steps }, () => Array.from({ length: MICRO }, () => Int32Array.from({ length: ROWS * SEQ }, () => Math.floor(next() * config.vocabSize))));
}

const bits = (t: Tensor) => Buffer.from((backend.download(t) as Float32Array).buffer);

interface Run {
  results: StepResult[]; weights: Map<string, Buffer>; m: Map<string, Buffer>; v: Map<string, Buffer>;
  /** Block 1's up projection before the first step and after each run() (before any flush). */
  probe: Buffer[];
}
const PROBE = 'blocks.1.mlp.up.weight';

/** `steps` steps of `MICRO` microbatches, deferring the update in the steps `overlap(step)` says. */
function train(steps: number, overlap: (step: number) => boolean): Run {
  const init = initialWeights(config, DEFAULT_INIT, 7);
  const masters = new Map([...parameterShapes(config)].map(([name, shape]) => [name, backend.upload(init.get(name)!, shape, 'float32')]));
  const graph = new TrainingGraph(config, backend, structureParams(config, masters));
  const optimizer = new AdamW(backend, { kind: 'adamw', lr: 3e-3, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0.01 }, masters);
  const step = new TrainStep(backend, graph, optimizer, 0.5);
  const data = batches(steps);
  const results: StepResult[] = [], probe = [bits(masters.get(PROBE)!)];
  for (let i = 0; i < steps; i++) {
    step.overlapAdamw = overlap(i);
    step.run(i + 1, MICRO, (micro) => ({ tokens: data[i][micro], rows: ROWS }), 3e-3 * (1 - i / (2 * steps)), 1 / (MICRO * ROWS * (SEQ - 1)));
    results.push(...step.settle());
    assert.equal(optimizer.hasDeferred, overlap(i));
    probe.push(bits(masters.get(PROBE)!));
  }
  step.dispose(); // flushes
  assert.equal(optimizer.hasDeferred, false);
  const all = (map: Map<string, Tensor>) => new Map([...map].map(([n, t]) => [n, bits(t)]));
  return { results, weights: all(masters), m: all(optimizer.m), v: all(optimizer.v), probe };
}

function assertSameRun(a: Run, b: Run, what: string): void {
  assert.deepEqual(b.results, a.results, `${what}: losses and gradient norms`);
  for (const key of ['weights', 'm', 'v'] as const) {
    for (const [name, t] of a[key]) assert.ok(t.equals(b[key].get(name)!), `${what}: ${key} of ${name} differ`);
  }
}

test('updateGroups: the embeddings and the zeroed-first gradients first, then each block, then the output table', () => {
  const graph = new TrainingGraph(config, backend, structureParams(config, new Map([...parameterShapes(config)].map(([n, s]) => [n, backend.zeros(s, 'float32')]))));
  const groups = updateGroups(graph);
  assert.equal(groups.length, config.nLayers + 2);
  assert.deepEqual(groups.flat().sort(), [...parameterShapes(config).keys()].sort());
  assert.ok(groups[0].includes('wte.weight') && groups[0].includes('wpe.weight') && groups[0].includes('blocks.2.ln1.weight') && groups[0].includes('lnF.bias'));
  assert.deepEqual(groups[2], ['blocks.1.attn.wqkv.weight', 'blocks.1.attn.out.weight', 'blocks.1.mlp.up.weight', 'blocks.1.mlp.down.weight']);
  assert.deepEqual(groups[config.nLayers + 1], ['lmHead.weight']);
});

test('deferred AdamW gives the same losses, norms, weights and moments bit for bit (CPU, accumulation 2, switched mid-run)', () => {
  const steps = 5;
  const plain = train(steps, () => false);
  const every = train(steps, () => true), some = train(steps, (s) => s === 1 || s === 2);
  assertSameRun(plain, every, 'deferred every step');
  assertSameRun(plain, some, 'deferred in steps 2 and 3 only');
  // Deferred means deferred: after step i, block 1 holds what the plain run had after step i - 1 (its update waits for the next forward).
  for (let i = 1; i <= steps; i++) {
    assert.ok(every.probe[i].equals(plain.probe[i - 1]) && !every.probe[i].equals(plain.probe[i]), `step ${i}: block 1 was updated before the next forward`);
    assert.ok(some.probe[i].equals(plain.probe[i - (i === 2 || i === 3 ? 1 : 0)]), `step ${i} of the run switched mid-way`);
  }
});

// The loop: flushes before the checkpoint and at the end, so the saved files are the same bytes, and a
// run stopped and resumed under deferral reproduces the uninterrupted run without it.
const yaml = join(projectRoot, 'yamls', 'tiny-cpu.yaml');
const quiet = () => {};

async function withOverlap<T>(on: boolean, fn: () => Promise<T>): Promise<T> {
  const old = process.env.MPT_TRAIN_OVERLAP_ADAMW;
  process.env.MPT_TRAIN_OVERLAP_ADAMW = on ? '1' : '0';
  try {
    return await fn();
  } finally {
    if (old === undefined) delete process.env.MPT_TRAIN_OVERLAP_ADAMW;
    else process.env.MPT_TRAIN_OVERLAP_ADAMW = old;
  }
}

const gradNorms = (folder: string) => readFileSync(join(folder, 'metrics.jsonl'), 'utf8').trim().split('\n')
  .map((l) => JSON.parse(l)).filter((r) => r.kind === 'train').map((r) => [r.step, r.gradNorm, r.loss]);

test('the training loop with deferred AdamW: the same metrics and checkpoint bytes; stop and resume under it match', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-overlap-'));
  try {
    const common = ['max_duration=6ba', 'global_train_batch_size=4', 'device_train_microbatch_size=2', 'scheduler.t_warmup=2ba', 'eval_interval=3ba',
      'eval_subset_num_batches=2', 'device_eval_batch_size=4', 'save_interval=2ba', 'save_num_checkpoints_to_keep=0', 'optimizer.weight_decay=0.01',
      'model.n_layers=2', 'max_seq_len=32', 'console_log_interval=1'];
    const run = (on: boolean, folder: string, stopAtStep?: number) =>
      withOverlap(on, () => trainFromYaml(yaml, [...common, `save_folder=${join(dir, folder)}`], { backend, log: quiet, stopAtStep }));
    const plain = await run(false, 'plain'), deferred = await run(true, 'deferred');
    assert.equal(plain.losses.length, 6);
    assert.deepEqual(deferred.losses, plain.losses);
    assert.deepEqual(deferred.evals.map((e) => [e.step, e.loss]), plain.evals.map((e) => [e.step, e.loss]));
    assert.deepEqual(gradNorms(join(dir, 'deferred')), gradNorms(join(dir, 'plain')));
    for (const step of [2, 4, 6]) {
      for (const file of ['model.safetensors', 'optimizer.safetensors']) {
        assert.ok(readFileSync(join(dir, 'plain', `ba${step}`, file)).equals(readFileSync(join(dir, 'deferred', `ba${step}`, file))), `ba${step}/${file} differs`);
      }
    }
    // Stopped after step 5 (its last checkpoint: step 4), then resumed: both halves deferred.
    const first = await run(true, 'cut', 5);
    assert.deepEqual(first.losses, plain.losses.slice(0, 5));
    const resumed = await run(true, 'cut');
    assert.equal(resumed.startStep, 4);
    assert.deepEqual(resumed.losses, plain.losses.slice(4));
    for (const file of ['model.safetensors', 'optimizer.safetensors']) {
      assert.ok(readFileSync(join(dir, 'plain', 'ba6', file)).equals(readFileSync(join(dir, 'cut', 'ba6', file))), `resumed ba6/${file} differs`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
