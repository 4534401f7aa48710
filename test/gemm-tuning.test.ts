// GEMM tuning (src/backend/cuda/cublaslt-api.ts): the choice rule given times and the in-step rotation's
// bookkeeping (no GPU needed), and on a GPU the sustained timing mode (MPT_GEMM_TUNE_SUSTAINED=1) end to
// end (trials at the power cap with L2 flushed, accumulating GEMMs still added into once, the observer
// hook's two timings) and the in-step mode (MPT_GEMM_TUNE_IN_STEP=1): every real call runs once with the
// rotation's candidate, each within tolerance of the heuristic's first, until the choice is fixed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gemmTuning, inStepExploring, inStepFromEnv, pickFastest, tuningLog, type TuningTrial } from '../src/backend/cuda/cublaslt-api.js';
import { UserError } from '../src/util/errors.js';
import { CandidateRotation } from '../src/backend/cuda/gemm-rotation.js';
import { median } from '../src/util/median.js';
import { TrainingGemm, type GemmArgs } from '../src/backend/cuda/training-gemm.js';
import { trainingBackend } from '../src/backend/backend.js';
import { asStored, close, cpu, cudaFor, down, pair, randn, skip } from './cuda-harness.js';

test('the heuristic\'s first stays unless another is faster by more than the margin', () => {
  assert.equal(pickFastest([1.0, 0.98, 0.99], 0.03), 0, '2 % faster is a tie');
  assert.equal(pickFastest([1.0, 0.971, 0.96], 0.03), 2, 'the fastest of those beyond the margin');
  assert.equal(pickFastest([1.0, 0.969, 0.98], 0.03), 1);
  assert.equal(pickFastest([0.5, 0.6, 0.7], 0.03), 0, 'the first is the fastest');
  assert.equal(pickFastest([1.0, 0.9, 0.9], 0.03), 1, 'of equal times, the heuristic\'s earlier');
  assert.equal(pickFastest([1.0], 0.03), 0);
});

test('a failed candidate (Infinity) is never chosen; a failed first loses to any that ran', () => {
  assert.equal(pickFastest([1.0, Infinity, 0.5], 0.03), 2);
  assert.equal(pickFastest([Infinity, 2.0, 1.5], 0.03), 2);
  assert.equal(pickFastest([Infinity, Infinity], 0.03), 0, 'nothing ran: the heuristic\'s first, as without tuning');
  assert.equal(pickFastest([1.0, 0.5], 0), 1, 'margin 0: plain fastest');
});

test('cuda bf16: sustained tuning times every candidate at the cap and still adds into accumulating outputs once', { skip }, () => {
  const be = cudaFor('bfloat16'), g = trainingBackend(be);
  // Shapes no other test uses (choices are kept per process and shape), all tuned (minFlops 0); short runs.
  const rows = 71, inF = 136, outF = 56;
  const [xg, xc] = pair(be, randn(rows * inF), [rows, inF]);
  const [wg, wc] = pair(be, randn(outF * inF, 0.1), [outF, inF]);
  const f32 = (x: Float32Array, shape: number[]) => [be.upload(x, shape, 'float32'), cpu.upload(Float32Array.from(x), shape, 'float32')];
  const [dWg, dWc] = f32(randn(outF * inF), [outF, inF]);
  const [dxg, dxc] = pair(be, randn(rows * inF), [rows, inF]);
  const saved = { ...gemmTuning };
  Object.assign(gemmTuning, { minFlops: 0, stored: false, sustained: true, sustainedMs: 1, heatMs: 1, firstHeatMs: 2, inStep: 'off' });
  const trials: Array<{ n: number; burst: number[]; sustained: number[] }> = [];
  gemmTuning.observe = (trial: TuningTrial) => {
    trials.push({ n: trial.algos.length, burst: trial.burst(), sustained: trial.sustained({ ms: 1, rounds: 1, flushL2: false }) });
  };
  const before = tuningLog.length;
  try {
    for (let call = 0; call < 2; call++) { // the first call tunes, the second reuses the choice: both add once
      const [dyg, dyc] = pair(be, randn(rows * outF), [rows, outF]);
      g.linearBackwardInto({ dy: dyg, x: xg, weight: wg, dWeight: dWg, dBias: null, dxInto: dxg });
      cpu.linearBackwardInto({ dy: dyc, x: xc, weight: wc, dWeight: dWc, dBias: null, dxInto: dxc });
    }
    close('dx accumulated twice', down(be, dxg), down(cpu, dxc), 1e-2);
    close('dWeight accumulated twice', down(be, dWg), down(cpu, dWc), 1e-3);
  } finally {
    Object.assign(gemmTuning, saved);
  }
  const mine = tuningLog.slice(before);
  assert.ok(mine.length >= 2, `${mine.length} shapes tuned, expected dx and dW`);
  for (const r of mine) {
    assert.equal(r.timing, 'sustained');
    assert.ok(Number.isFinite(r.bestMs) && r.bestMs > 0 && r.bestMs <= r.firstMs, `${r.what}: chosen ${r.bestMs} ms, first ${r.firstMs} ms`);
  }
  assert.equal(trials.length, mine.length, 'the observer sees every tuned shape');
  for (const t of trials) {
    assert.equal(t.burst.length, t.n);
    assert.equal(t.sustained.length, t.n);
    assert.ok(Number.isFinite(t.burst[0]) && Number.isFinite(t.sustained[0]), 'the heuristic\'s first runs both ways');
  }
});

test('in-step rotation: call n takes the n-th live candidate; a dropped one leaves the rotation', () => {
  const r = new CandidateRotation(3);
  assert.deepEqual(Array.from({ length: 7 }, () => r.next()), [0, 1, 2, 0, 1, 2, 0]);
  assert.equal(r.drop(1), true);
  assert.deepEqual(r.liveCandidates, [0, 2]);
  assert.deepEqual(Array.from({ length: 4 }, () => r.next()), [2, 0, 2, 0], 'call 8 is the 8th mod 2 of [0, 2]');
  assert.equal(r.callsMade, 11);
  assert.equal(r.drop(0), true);
  assert.equal(r.drop(2), false, 'the last candidate stays: the call must run with something');
  assert.deepEqual(r.liveCandidates, [2]);
  assert.throws(() => new CandidateRotation(0), RangeError);
});

test('in-step rotation: each candidate\'s first completed call is not counted; medians; ready once every live one has its samples', () => {
  const r = new CandidateRotation(3);
  r.add(0, 100); // warm-up (kernel load): never counted
  r.add(0, 1.0); r.add(0, 3.0);
  assert.equal(r.samplesOf(0), 2);
  assert.equal(r.times()[0], 2.0, 'median of two: their mean');
  assert.deepEqual(r.times().slice(1), [Infinity, Infinity], 'no counted time yet');
  assert.equal(r.complete(2), false);
  r.add(1, 50); r.add(1, 0.9); r.add(1, 0.95);
  assert.equal(r.complete(2), false, 'candidate 2 has nothing counted');
  r.drop(2);
  assert.equal(r.complete(2), true, 'a dropped candidate does not hold the choice back');
  assert.equal(r.times()[2], Infinity);
  assert.equal(pickFastest(r.times(), 0.03), 1, '0.925 against 2.0');
  r.add(2, 0.1); r.add(2, 0.1);
  assert.equal(r.times()[2], Infinity, 'a dropped candidate\'s late times are not counted');
});

test('in-step rotation: a shape called 24 times a step with 8 candidates is ready after two steps (6 calls each, 5 counted)', () => {
  const r = new CandidateRotation(8);
  const ms = [1.0, 1.1, 0.9, 1.2, 0.5, 1.0, 1.05, 0.95];
  for (let call = 0; call < 47; call++) {
    const i = r.next();
    r.add(i, ms[i] + 0.01 * (call % 3));
  }
  assert.equal(r.complete(5), false, 'after 47 calls candidate 7 has 4 counted');
  const i = r.next();
  assert.equal(i, 7);
  r.add(i, ms[i]);
  assert.equal(r.complete(5), true);
  assert.equal(pickFastest(r.times(), 0.03), 4);
  assert.equal(r.samplesOf(4), 5);
});

test('median of odd and even counts', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([7]), 7);
  assert.ok(Number.isNaN(median([])));
});

test('cuda bf16: in-step tuning runs every accumulating call exactly once, each candidate within tolerance of the heuristic\'s first, then fixes a choice', { skip }, () => {
  const be = cudaFor('bfloat16'), gemm = new TrainingGemm(be.ctx);
  // C [m, n] float32 += A [m, k] · B [k, n] (bf16): a shape no other test uses (choices are kept per process and shape).
  const m = 72, n = 40, k = 152;
  const a = asStored(randn(m * k), 'bfloat16'), b = asStored(randn(k * n), 'bfloat16'), c0 = randn(m * n);
  const want = new Float32Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
    let s = c0[i * n + j];
    for (let p = 0; p < k; p++) s += a[i * k + p] * b[p * n + j];
    want[i * n + j] = s;
  }
  const ta = be.upload(a, [m, k], 'bfloat16'), tb = be.upload(b, [k, n], 'bfloat16');
  const saved = { ...gemmTuning };
  Object.assign(gemmTuning, { minFlops: 0, stored: false, sustained: false, inStep: 'all', inStepSamples: 2, candidates: 4 });
  const before = tuningLog.length, outputs: Float32Array[] = [];
  const mine = () => tuningLog.slice(before).filter((r) => r.timing === 'in-step');
  try {
    for (let call = 0; call < 40 && (mine().length === 0 || outputs.length < 20); call++) {
      const tc = be.upload(c0, [m, n], 'float32'); // C0 afresh: each call's output shows how often it added
      const g: GemmArgs = { m, n, k, a: (ta as unknown as { ptr: number }).ptr, aTrans: false, b: (tb as unknown as { ptr: number }).ptr, bTrans: false,
        c: (tc as unknown as { ptr: number }).ptr, alpha: 1, beta: 1, inType: 'bfloat16', outType: 'float32' };
      gemm.gemm(g);
      outputs.push(down(be, tc)); // waits: the call's events are complete at the next call
      be.release(tc);
    }
  } finally {
    Object.assign(gemmTuning, saved);
  }
  outputs.forEach((got, i) => {
    close(`call ${i}: C0 + A·B`, got, want, 1e-5);
    close(`call ${i} against the heuristic's first (call 0)`, got, outputs[0], 1e-5);
  });
  const records = mine();
  assert.equal(records.length, 1, 'the shape\'s choice was fixed once');
  const r = records[0];
  assert.ok(r.candidates > 1 && r.candidates <= 4, `${r.candidates} candidates`);
  assert.ok(r.chosen >= 0 && r.chosen < r.candidates);
  assert.ok((r.samples ?? 0) >= 2, `${r.samples} samples`);
  assert.ok((r.calls ?? 0) >= 3 * r.candidates, `${r.calls} calls explored: one uncounted and two counted for each candidate`);
  assert.ok(Number.isFinite(r.bestMs) && r.bestMs > 0 && r.bestMs <= r.firstMs, `chosen ${r.bestMs} ms, first ${r.firstMs} ms`);
  assert.ok(!inStepExploring().includes(r.what), 'no longer exploring');
  assert.ok(outputs.length > (r.calls ?? 0), 'calls after the choice ran too');
});

test('cuda: in-step tuning leaves float32 GEMMs to the burst timing', { skip }, () => {
  const be = cudaFor('float32'), gemm = new TrainingGemm(be.ctx);
  const m = 24, n = 56, k = 40;
  const [ta, tb, tc] = [be.upload(randn(m * k), [m, k], 'float32'), be.upload(randn(k * n), [k, n], 'float32'), be.upload(randn(m * n), [m, n], 'float32')];
  const saved = { ...gemmTuning };
  Object.assign(gemmTuning, { minFlops: 0, stored: false, sustained: false, inStep: 'all', candidates: 4 });
  const before = tuningLog.length;
  const ptr = (t: unknown) => (t as { ptr: number }).ptr;
  try {
    gemm.gemm({ m, n, k, a: ptr(ta), aTrans: false, b: ptr(tb), bTrans: false, c: ptr(tc), alpha: 1, beta: 0, inType: 'float32', outType: 'float32' });
    be.synchronize();
  } finally {
    Object.assign(gemmTuning, saved);
  }
  const records = tuningLog.slice(before);
  assert.equal(records.length, 1);
  assert.equal(records[0].timing, 'burst');
  assert.ok(!inStepExploring().includes(records[0].what));
});

test('MPT_GEMM_TUNE_IN_STEP: unset or training the training step\'s handle, 0 off, 1 or all every handle; anything else an error naming it', () => {
  for (const v of [undefined, '', 'training']) assert.equal(inStepFromEnv(v), 'training');
  assert.equal(inStepFromEnv('0'), 'off');
  for (const v of ['1', 'all']) assert.equal(inStepFromEnv(v), 'all');
  assert.throws(() => inStepFromEnv('yes'), (e: unknown) => e instanceof UserError && /MPT_GEMM_TUNE_IN_STEP: 'yes'/.test(e.message));
});

test('cuda bf16: in-step tuning scoped to training explores the training GEMMs\' shapes and leaves the inference front end to the burst', { skip }, () => {
  const be = cudaFor('bfloat16'), gemm = new TrainingGemm(be.ctx);
  const ptr = (t: unknown) => (t as { ptr: number }).ptr;
  // Shapes no other test uses (choices are kept per process and shape).
  const [m, n, k] = [88, 48, 136];
  const [ta, tb, tc] = [be.upload(randn(m * k), [m, k], 'bfloat16'), be.upload(randn(k * n), [k, n], 'bfloat16'), be.alloc([m, n], 'bfloat16')];
  const [rows, inF, outF] = [56, 104, 72];
  const [x, w, y] = [be.upload(randn(rows * inF), [rows, inF], 'bfloat16'), be.upload(randn(outF * inF), [outF, inF], 'bfloat16'), be.alloc([rows, outF], 'bfloat16')];
  const saved = { ...gemmTuning };
  Object.assign(gemmTuning, { minFlops: 0, stored: false, sustained: false, inStep: 'training', candidates: 4 });
  const before = tuningLog.length, exploring = inStepExploring().length;
  try {
    gemm.gemm({ m, n, k, a: ptr(ta), aTrans: false, b: ptr(tb), bTrans: false, c: ptr(tc), alpha: 1, beta: 0, inType: 'bfloat16', outType: 'bfloat16' });
    be.blas.matmul({ rows, inFeatures: inF, outFeatures: outF, x: ptr(x), w: ptr(w), y: ptr(y), bias: null, accumulate: false, dtype: 'bfloat16' });
    be.synchronize();
    const records = tuningLog.slice(before);
    assert.equal(records.length, 1, 'one shape tuned by trials: the inference front end\'s');
    assert.equal(records[0].timing, 'burst');
    assert.equal(inStepExploring().length, exploring + 1, 'the training GEMM\'s shape (and only it) explores in the step');
  } finally {
    Object.assign(gemmTuning, saved);
  }
});
