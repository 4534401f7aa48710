// The fresh-run initialisation: the normal fill's statistics and determinism, and initialWeights' rules
// (kaiming_normal_ fan_in with the relu gain, residual projections ÷ √(2·n_layers), LayerNorm 1, biases 0).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MPT_1B_REDPAJAMA_200B, type MptConfig } from '../src/model/config.js';
import { DEFAULT_INIT, INIT_BLOCK, initialWeights } from '../src/train/init.js';
import { Rng } from '../src/util/random.js';

function moments(a: Float32Array): { mean: number; sd: number } {
  let sum = 0, squares = 0;
  for (const x of a) { sum += x; squares += x * x; }
  const mean = sum / a.length;
  return { mean, sd: Math.sqrt(squares / a.length - mean * mean) };
}

test('Rng.fillNormal: mean 0 and the given std, the same values for the same seed, odd lengths filled to the end', () => {
  const a = new Float32Array(400_001), b = new Float32Array(400_001);
  new Rng(5).fillNormal(a, 0.3);
  new Rng(5).fillNormal(b, 0.3);
  assert.deepEqual(a, b);
  const { mean, sd } = moments(a);
  // 400k draws: the mean's standard error is 0.3 / 632 ≈ 4.7e-4, the sd's ≈ 3.4e-4.
  assert.ok(Math.abs(mean) < 2.5e-3, `mean ${mean}`);
  assert.ok(Math.abs(sd - 0.3) < 2e-3, `sd ${sd}`);
  assert.notEqual(a[a.length - 1], 0);
  const other = new Float32Array(8);
  new Rng(6).fillNormal(other, 0.3);
  assert.notDeepEqual(other, a.subarray(0, 8));
});

test('initialWeights: kaiming_normal_ (fan_in, relu gain), residual projections ÷ √(2·n_layers), LayerNorm 1, biases 0', async () => {
  const config: MptConfig = { ...MPT_1B_REDPAJAMA_200B, dModel: 256, nHeads: 4, nLayers: 3, vocabSize: 1000, maxSeqLen: 64, noBias: false };
  let reported = 0;
  const w = await initialWeights(config, DEFAULT_INIT, 17, { progress: (n) => { reported += n; } });
  assert.equal(reported, [...w.values()].reduce((sum, a) => sum + a.length, 0), 'progress counts every value once');
  const expect = (name: string, sd: number) => {
    const m = moments(w.get(name)!);
    assert.ok(Math.abs(m.sd / sd - 1) < 0.03, `${name}: sd ${m.sd} against ${sd}`);
    assert.ok(Math.abs(m.mean) < 0.05 * sd, `${name}: mean ${m.mean}`);
  };
  const d = config.dModel, hidden = 4 * d, residual = Math.sqrt(2 * config.nLayers);
  expect('wte.weight', Math.SQRT2 / Math.sqrt(d));
  expect('blocks.1.attn.wqkv.weight', Math.SQRT2 / Math.sqrt(d));
  expect('blocks.1.mlp.up.weight', Math.SQRT2 / Math.sqrt(d));
  expect('blocks.1.attn.out.weight', Math.SQRT2 / Math.sqrt(d) / residual);
  expect('blocks.1.mlp.down.weight', Math.SQRT2 / Math.sqrt(hidden) / residual);
  assert.ok(w.get('blocks.2.ln1.weight')!.every((x) => x === 1));
  assert.ok(w.get('blocks.2.ln1.bias')!.every((x) => x === 0));
  assert.ok(w.get('blocks.0.mlp.up.bias')!.every((x) => x === 0));
  assert.deepEqual((await initialWeights(config, DEFAULT_INIT, 17)).get('blocks.0.mlp.down.weight'), w.get('blocks.0.mlp.down.weight'), 'a seed gives the same weights');
});

test('Rng.keyed: the same keys give the same stream, any other key or seed another', () => {
  const draw = (rng: Rng) => Array.from({ length: 4 }, () => rng.nextUint32());
  assert.deepEqual(draw(Rng.keyed(3, 1, 2)), draw(Rng.keyed(3, 1, 2)));
  const streams = [draw(Rng.keyed(3, 1, 2)), draw(Rng.keyed(3, 2, 1)), draw(Rng.keyed(3, 1, 3)), draw(Rng.keyed(4, 1, 2)), draw(Rng.keyed(3, 1)), draw(new Rng(3))];
  assert.equal(new Set(streams.map((s) => s.join())).size, streams.length);
});

test('initialWeights: worker threads fill the same values as one thread, blocks of a tensor from their own streams', async () => {
  // wte has 2.5 blocks of INIT_BLOCK values, so blocks are shared out across the workers and one ends short.
  const config: MptConfig = { ...MPT_1B_REDPAJAMA_200B, dModel: 128, nHeads: 4, nLayers: 2, vocabSize: Math.ceil((2.5 * INIT_BLOCK) / 128), maxSeqLen: 64 };
  let reported = 0;
  const one = await initialWeights(config, DEFAULT_INIT, 9, { threads: 1 });
  const three = await initialWeights(config, DEFAULT_INIT, 9, { threads: 3, progress: (n) => { reported += n; } });
  assert.deepEqual([...three.keys()], [...one.keys()]);
  for (const [name, values] of one) assert.deepEqual(three.get(name), values, name);
  assert.equal(reported, [...one.values()].reduce((sum, a) => sum + a.length, 0), 'progress counts every value once');
  const wte = one.get('wte.weight')!;
  assert.notDeepEqual(wte.subarray(INIT_BLOCK, INIT_BLOCK + 8), wte.subarray(0, 8), 'each block has its own stream');
  assert.notEqual(wte[wte.length - 1], 0, 'the short last block is filled to the end');
});
