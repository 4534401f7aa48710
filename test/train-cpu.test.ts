import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { latestCheckpoint, listCheckpoints } from '../src/train/checkpoint.js';
import { trainFromYaml } from '../src/train/from-yaml.js';
import { projectRoot } from './fixtures.js';

/**
 * Training on real text on the CPU (the tiny YAML, shortened): the loss must fall below what the
 * text's byte frequencies alone give, and a run stopped and resumed must reproduce the
 * uninterrupted run's losses bit for bit.
 */
const yaml = join(projectRoot, 'yamls', 'tiny-cpu.yaml');
const text = join(projectRoot, 'node_modules', '@types', 'node', 'fs.d.ts');
const quiet = () => {};
const backend = new CpuBackend({ threads: 2 });

/**
 * The threshold: the cross-entropy of the validation bytes under the training bytes' unigram
 * frequencies (what a model that ignores context at best achieves; ≈ 3.26 nats here), less 0.3
 * nats. Below it, the model must be using the preceding bytes. Same split as the byte source: the
 * last 10% of the 64-byte windows are validation.
 */
function unigramCrossEntropy(): number {
  const bytes = readFileSync(text);
  const windows = Math.floor(bytes.length / 64), val = Math.floor(windows * 0.1), train = (windows - val) * 64;
  const counts = new Float64Array(256);
  for (let i = 0; i < train; i++) counts[bytes[i]]++;
  let ce = 0;
  for (let i = train; i < windows * 64; i++) ce -= Math.log(Math.max(counts[bytes[i]], 0.5) / train);
  return ce / (windows * 64 - train);
}

test('a tiny model learns real text on the CPU', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-train-'));
  try {
    const threshold = unigramCrossEntropy() - 0.3;
    const r = await trainFromYaml(yaml, [
      `save_folder=${dir}`, 'max_duration=60ba', 'eval_interval=60ba', 'global_train_batch_size=8', 'device_train_microbatch_size=8',
      'device_eval_batch_size=16', 'eval_subset_num_batches=8', 'scheduler.t_warmup=5ba', 'save_interval=60ba',
    ], { backend, log: quiet });
    const finalEval = r.evals[r.evals.length - 1];
    assert.ok(finalEval, 'an evaluation ran at the end');
    assert.ok(r.losses[0].loss > 5, `the first loss ${r.losses[0].loss} should be near or above ln 256`);
    assert.ok(finalEval.loss < threshold, `eval loss ${finalEval.loss} should be below ${threshold} (unigram cross-entropy − 0.3)`);
    const lines = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(lines.some((l) => l.kind === 'eval' && Math.abs(l.perplexity - Math.exp(l.loss)) < 1e-9 * l.perplexity));
    assert.match(readFileSync(join(dir, 'loss.svg'), 'utf8'), /<polyline/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('stop and autoresume give the same losses bit for bit; an interrupted save is skipped', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-resume-'));
  try {
    const common = ['max_duration=6ba', 'global_train_batch_size=4', 'device_train_microbatch_size=2', 'scheduler.t_warmup=2ba',
      'eval_interval=100ba', 'save_interval=2ba', 'save_num_checkpoints_to_keep=2', 'optimizer.weight_decay=0.01', 'model.n_layers=1', 'max_seq_len=32', 'console_log_interval=1'];
    const whole = await trainFromYaml(yaml, [...common, `save_folder=${join(dir, 'whole')}`], { backend, log: quiet });
    assert.equal(whole.losses.length, 6);

    const cut = join(dir, 'cut');
    const first = await trainFromYaml(yaml, [...common, `save_folder=${cut}`], { backend, log: quiet, stopAtStep: 5 });
    assert.deepEqual(first.losses, whole.losses.slice(0, 5));
    assert.deepEqual(listCheckpoints(cut).map((c) => c.step), [2, 4]);
    // A kill during the save of step 6: a half-written temporary folder, and (as a non-atomic copy
    // would leave) a ba6 whose model file is short. Neither may be resumed from.
    mkdirSync(join(cut, '.ba6.999.tmp'));
    writeFileSync(join(cut, '.ba6.999.tmp', 'model.safetensors'), 'partial');
    const broken = join(cut, 'ba6');
    mkdirSync(broken);
    for (const f of ['model.safetensors', 'optimizer.safetensors', 'state.json']) writeFileSync(join(broken, f), readFileSync(join(cut, 'ba4', f)));
    truncateSync(join(broken, 'model.safetensors'), 100);
    assert.equal(latestCheckpoint(cut), join(cut, 'ba4'));

    const resumed = await trainFromYaml(yaml, [...common, `save_folder=${cut}`], { backend, log: quiet });
    assert.equal(resumed.startStep, 4);
    assert.deepEqual(resumed.losses, whole.losses.slice(4), 'losses after resuming must equal the uninterrupted run exactly');
    assert.ok(!existsSync(join(cut, '.ba6.999.tmp')), 'the abandoned temporary folder is cleared by the next save');
    const metrics = readFileSync(join(cut, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(metrics.filter((m) => m.kind === 'train').map((m) => m.step), [1, 2, 3, 4, 5, 6]);

    // A checkpoint of another model is refused by the tensor that does not fit, before any step.
    const other = (overrides: string[]) => trainFromYaml(yaml, [...common, ...overrides, `load_path=${join(cut, 'ba4')}`, `save_folder=${join(dir, 'other')}`], { backend, log: quiet });
    await assert.rejects(other(['model.n_layers=2']), /no tensor blocks\.1\.\S+: the checkpoint does not match the run's model/);
    await assert.rejects(other(['model.mlp_ratio=2']), /blocks\.0\.mlp\.up\.weight has \d+ values, the run's model needs \[/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
