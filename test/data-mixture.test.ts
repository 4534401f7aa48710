import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { Permutation } from '../src/data/permutation.js';
import { MixtureSchedule } from '../src/data/schedule.js';
import { openMixture } from '../src/data/mixture.js';
import { PRESETS, parseMixtureConfig, resolveWeights } from '../src/data/mixture-config.js';
import { ConfigError } from '../src/util/errors.js';
import { sampleTokens, syntheticDataset } from './data/synthetic-dataset.js';

const redpajama = resolveWeights(PRESETS.redpajama!);

/** Pearson's chi-square statistic of observed counts against probabilities. */
function chiSquare(observed: number[], probabilities: number[]): number {
  const n = observed.reduce((a, b) => a + b, 0);
  return observed.reduce((sum, o, i) => sum + (o - n * probabilities[i]!) ** 2 / (n * probabilities[i]!), 0);
}
// Upper 0.1% points of the chi-square distribution, by degrees of freedom.
const CHI2_999: Record<number, number> = { 2: 13.816, 6: 22.458 };

test('source frequencies over 100,000 draws pass a chi-square test against the RedPajama weights', () => {
  for (const seed of [0, 1, 12345]) {
    const schedule = new MixtureSchedule(redpajama.probabilities, redpajama.names.map(() => 1000), seed);
    const counts = new Array(redpajama.names.length).fill(0);
    for (const d of schedule.draws(0, 100_000)) counts[d.source]++;
    const stat = chiSquare(counts, redpajama.probabilities);
    assert.ok(stat < CHI2_999[6]!, `seed ${seed}: chi-square ${stat.toFixed(2)} ≥ ${CHI2_999[6]} for counts ${counts}`);
  }
});

test('the chi-square test does detect wrong weights (it can fail)', () => {
  const schedule = new MixtureSchedule([0.5, 0.3, 0.2], [10, 10, 10], 3);
  const counts = [0, 0, 0];
  for (const d of schedule.draws(0, 100_000)) counts[d.source]++;
  assert.ok(chiSquare(counts, [0.5, 0.3, 0.2]) < CHI2_999[2]!);
  assert.ok(chiSquare(counts, [0.48, 0.32, 0.2]) > CHI2_999[2]!, 'a 2-point shift must be detected');
});

test('a zero-weight source is never drawn', () => {
  const schedule = new MixtureSchedule([0.5, 0, 0.5, 0], [10, 10, 10, 10], 9);
  for (const d of schedule.draws(0, 20_000)) assert.ok(d.source === 0 || d.source === 2);
});

test('the same seed gives the same stream, another seed another', () => {
  const a = new MixtureSchedule(redpajama.probabilities, [50, 40, 30, 20, 10, 5, 3], 42).draws(0, 5000);
  const b = new MixtureSchedule(redpajama.probabilities, [50, 40, 30, 20, 10, 5, 3], 42).draws(0, 5000);
  const c = new MixtureSchedule(redpajama.probabilities, [50, 40, 30, 20, 10, 5, 3], 43).draws(0, 5000);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test('resuming at step k gives the uninterrupted stream (fresh schedule, no saved state)', () => {
  const sizes = [13, 40, 7, 100, 3, 55, 21];
  const batch = 96;
  const whole = new MixtureSchedule(redpajama.probabilities, sizes, 5).draws(0, batch * 200);
  for (const step of [0, 1, 42, 43, 150, 199]) {
    const resumed = new MixtureSchedule(redpajama.probabilities, sizes, 5); // a new process: nothing cached
    assert.deepEqual(resumed.draws(step * batch, batch), whole.slice(step * batch, (step + 1) * batch), `step ${step}`);
  }
  // And out of order on one instance (the block table filled far ahead, then used behind).
  const one = new MixtureSchedule(redpajama.probabilities, sizes, 5);
  assert.deepEqual(one.draws(150 * batch, batch), whole.slice(150 * batch, 151 * batch));
  assert.deepEqual(one.draws(3 * batch, batch), whole.slice(3 * batch, 4 * batch));
});

test('no sample repeats within an epoch of its source; each epoch is a new permutation', () => {
  const sizes = [5, 37, 100];
  const schedule = new MixtureSchedule([0.2, 0.3, 0.5], sizes, 11);
  const perSource: number[][] = [[], [], []];
  const draws = schedule.draws(0, 30_000);
  for (const d of draws) perSource[d.source]!.push(d.index);
  sizes.forEach((n, s) => {
    const seq = perSource[s]!;
    const epochs = Math.floor(seq.length / n);
    assert.ok(epochs >= 10, `source ${s} wrapped only ${epochs} times`);
    const orders = new Set<string>();
    for (let e = 0; e < epochs; e++) {
      const window = seq.slice(e * n, (e + 1) * n);
      assert.deepEqual([...window].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i), `source ${s} epoch ${e}`);
      orders.add(window.join(','));
    }
    if (n > 5) assert.equal(orders.size, epochs, `source ${s}: an epoch repeated the previous order`);
  });
  // Draws carry the epoch they belong to.
  const first = draws.filter((d) => d.source === 0).slice(0, 10);
  assert.deepEqual(first.map((d) => d.epoch), [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
});

test('the index permutation is a bijection for awkward sizes', () => {
  for (const n of [1, 2, 3, 17, 1000, 4097, 65537]) {
    const p = new Permutation(n, [1, 2, n]);
    const seen = new Uint8Array(n);
    for (let i = 0; i < n; i++) seen[p.at(i)]++;
    assert.ok(seen.every((c) => c === 1), `n=${n}`);
  }
  const p = new Permutation(1000, [7]);
  const fixed = Array.from({ length: 1000 }, (_, i) => p.at(i)).filter((x, i) => x === i).length;
  assert.ok(fixed < 10, `${fixed} fixed points: not shuffled`);
});

test('loader: ranks are disjoint and together equal the one-rank stream; microbatches split a rank', () => {
  const dir = syntheticDataset({ a: { train: 30, val: 5 }, b: { train: 11, val: 0 }, c: { train: 50, val: 3 } });
  try {
    const mixture = openMixture(parseMixtureConfig({ dataset: dir, seed: 3, global_batch: 12, weights: { a: 0.5, b: 0.2, c: 0.3 } }));
    assert.deepEqual(mixture.samplesPerEpoch, { a: 30, b: 11, c: 50 });
    for (const step of [0, 1, 7, 30]) {
      const whole = mixture.batch(step);
      assert.equal(whole.rows, 12);
      // Each row holds the sample its draw names (read back from the shards).
      whole.draws.forEach((d, r) => assert.deepEqual(Array.from(whole.tokens.subarray(r * 8, r * 8 + 8)), Array.from(sampleTokens(d.source, d.index, 8))));
      for (const world of [2, 3, 4]) {
        const parts = Array.from({ length: world }, (_, rank) => mixture.batch(step, rank, world));
        const keys = parts.flatMap((p) => p.draws.map((d) => `${d.source}:${d.index}:${d.epoch}`));
        assert.deepEqual(keys, whole.draws.map((d) => `${d.source}:${d.index}:${d.epoch}`));
        assert.deepEqual(Int32Array.from(parts.flatMap((p) => Array.from(p.tokens))), whole.tokens);
      }
      const micro = [0, 1, 2].map((i) => mixture.batch(step, 1, 2, i, 2));
      assert.deepEqual(micro.flatMap((m) => m.sources), mixture.batch(step, 1, 2).sources);
    }
    // Ranks of one step are disjoint samples (within an epoch no sample repeats, so keys differ).
    const r0 = mixture.batch(0, 0, 2).draws.map((d) => `${d.source}:${d.index}`);
    const r1 = mixture.batch(0, 1, 2).draws.map((d) => `${d.source}:${d.index}`);
    assert.equal(new Set([...r0, ...r1]).size, 12);
    assert.throws(() => mixture.batch(0, 0, 5), ConfigError);
    assert.throws(() => mixture.batch(0, 2, 2), RangeError);

    // Validation: fixed order, source by source (a: 5, b: 0, c: 3).
    assert.equal(mixture.validation.samples, 8);
    assert.equal(mixture.validation.batches(3), 2);
    const v = [0, 1].flatMap((i) => mixture.validation.batch(i, 3).draws.map((d) => `${d.source}:${d.index}`));
    assert.deepEqual(v, ['0:0', '0:1', '0:2', '0:3', '0:4', '2:0']);
    const vb = mixture.validation.batch(1, 3);
    assert.deepEqual(vb.sources, ['a', 'a', 'c']);
    assert.deepEqual(Array.from(vb.tokens.subarray(16, 24)), Array.from(sampleTokens(2, 0, 8, true)));
    mixture.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('weights: negative and all-zero are errors, unnormalized weights are normalized with a notice', () => {
  assert.throws(() => resolveWeights({ a: 0.5, b: -0.1 }), (e: Error) => e instanceof ConfigError && /weights\.b: weight -0\.1 is negative/.test(e.message));
  assert.throws(() => resolveWeights({ a: 0, b: 0 }), (e: Error) => e instanceof ConfigError && /all weights are zero/.test(e.message));
  assert.throws(() => resolveWeights({ a: Number.NaN }), ConfigError);
  assert.throws(() => resolveWeights({}), ConfigError);
  const r = resolveWeights({ b: 3, a: 1 });
  assert.deepEqual(r.names, ['a', 'b']);
  assert.deepEqual(r.probabilities, [0.25, 0.75]);
  assert.match(r.notices[0]!, /sum to 4, not 1: normalized/);
  assert.deepEqual(resolveWeights({ a: 0.25, b: 0.75 }).notices, []);
  assert.ok(Math.abs(redpajama.probabilities.reduce((a, b) => a + b, 0) - 1) < 1e-12 && redpajama.notices.length === 0);
});

test('loader config errors name the source: an empty source with weight, a missing source, bad fields', () => {
  const dir = syntheticDataset({ a: { train: 4 }, empty: { train: 0 } });
  try {
    const open = (weights: Record<string, number>) => openMixture(parseMixtureConfig({ dataset: dir, seed: 1, global_batch: 2, weights }));
    assert.throws(() => open({ a: 1, empty: 1 }), /source "empty" has weight 1 but no training samples/);
    assert.throws(() => open({ a: 1, wikipedia: 0.5 }), /source "wikipedia" has weight 0.5 but the dataset .* has no such source/);
    const ok = open({ a: 2, empty: 0 });
    assert.ok(ok.notices.some((n) => /normalized/.test(n)));
    ok.close();
    const preset = () => openMixture(parseMixtureConfig({ dataset: dir, seed: 1, global_batch: 2 }));
    assert.throws(preset, /preset redpajama: source "arxiv"/);
    assert.throws(() => parseMixtureConfig({ dataset: dir, seed: 1, global_batch: 0 }), /global_batch/);
    assert.throws(() => parseMixtureConfig({ dataset: dir, seed: -1, global_batch: 2 }), /seed/);
    assert.throws(() => parseMixtureConfig({ dataset: dir, global_batch: 2, wieghts: {} }), /unknown field\(s\) wieghts/);
    assert.throws(() => parseMixtureConfig({ dataset: dir, global_batch: 2, preset: 'pile' }), /unknown preset "pile"/);
    assert.throws(() => openMixture(parseMixtureConfig({ dataset: dir + '-nope', global_batch: 2 })), /manifest.json is missing/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
