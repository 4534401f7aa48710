import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { trainingBackend } from '../src/backend/backend.js';
import { openModelFolder } from '../src/io/model-folder.js';
import { canonicalName } from '../src/io/weight-names.js';
import { loadModel } from '../src/model/load.js';
import { lossAndGradients, zeroGradients } from '../src/model/backward.js';
import { paramsByName } from '../src/model/param-map.js';
import { TrainingGraph } from '../src/model/training-forward.js';
import { AdamW, clipGradNorm } from '../src/train/optimizer.js';
import { ids, lossesOfSteps2To6, ref, referenceDir as dir, rows, tokens } from './training-reference.js';

/**
 * The CPU training path against the original MosaicGPT code (fixtures README, `train` and `adamw`):
 * loss, the global gradient norm, sampled gradients, the first AdamW step and the losses after it.
 */

test('float32 loss, gradients and AdamW steps match the original code', async () => {
  const backend = new CpuBackend();
  const folder = await openModelFolder(dir);
  const model = await loadModel(folder, backend, { dtype: 'float32' });
  await folder.close();
  const graph = new TrainingGraph(model.config, backend, model.params);
  const be = trainingBackend(backend);

  const grads = zeroGradients(model.config, backend);
  const { lossSum, count } = lossAndGradients(graph, ids, rows.length, grads, 1 / tokens);
  assert.equal(count, tokens);
  assert.ok(Math.abs(lossSum / count - ref.train.loss) <= 1e-5, `loss ${lossSum / count} vs ${ref.train.loss}`);

  // The fixture's per-parameter norm of wte (1.722955) disagrees with its own grad_total_norm: the
  // other parameters' norms and the total imply 1.723169 (what we get). So wte's norm is checked
  // against the one the total implies; every other norm against the fixture's value directly.
  const others = Object.entries(ref.train.grads).filter(([n]) => n !== 'transformer.wte.weight');
  const wteNormFromTotal = Math.sqrt(ref.train.grad_total_norm ** 2 - others.reduce((s, [, g]) => s + g.norm ** 2, 0));
  let checked = 0;
  for (const [original, g] of Object.entries(ref.train.grads)) {
    const name = canonicalName('mosaic_gpt', original, true);
    assert.ok(typeof name === 'string', `no canonical name for ${original}`);
    const values = be.download(grads.get(name)!) as Float32Array;
    const norm = Math.sqrt(values.reduce((s, v) => s + v * v, 0));
    const expectedNorm = name === 'wte.weight' ? wteNormFromTotal : g.norm;
    assert.ok(Math.abs(norm - expectedNorm) <= 1e-4 * expectedNorm, `${original}: gradient norm ${norm} vs ${expectedNorm}`);
    g.index.forEach((flat, i) => {
      const ours = values[flat], theirs = g.value[i];
      assert.ok(Math.abs(ours - theirs) <= Math.max(1e-4 * Math.abs(theirs), 1e-6), `${original}[${flat}]: ${ours} vs ${theirs}`);
      checked++;
    });
  }
  assert.ok(checked > 100, `only ${checked} gradient samples were compared`);

  const a = ref.adamw;
  const params = paramsByName(model.config, model.params);
  const optimizer = new AdamW(be, { kind: 'adamw', lr: a.lr, betas: a.betas, eps: a.eps, weightDecay: a.weight_decay }, params);
  const norm = clipGradNorm(be, grads, a.clip_grad_norm);
  assert.ok(Math.abs(norm - ref.train.grad_total_norm) <= 1e-5 * ref.train.grad_total_norm, `grad norm ${norm} vs ${ref.train.grad_total_norm}`);
  optimizer.update(grads, a.lr);
  for (const [original, expected] of Object.entries(a.params_after_first_step_at_grad_index)) {
    const values = be.download(params.get(canonicalName('mosaic_gpt', original, true) as string)!) as Float32Array;
    ref.train.grads[original].index.forEach((flat, i) => {
      assert.ok(Math.abs(values[flat] - expected[i]) <= 1e-5, `${original}[${flat}] after step 1: ${values[flat]} vs ${expected[i]}`);
    });
  }

  const losses = lossesOfSteps2To6(graph, model.config, backend, be, optimizer);
  losses.forEach((loss, i) => {
    const expected = a.losses_steps_2_to_6[i];
    assert.ok(Math.abs(loss - expected) <= 1e-4, `loss of step ${i + 2}: ${loss} vs ${expected}`);
  });
});
