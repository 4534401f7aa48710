// GEMM tuning (src/backend/cuda/cublaslt-api.ts): the choice rule given times (no GPU needed), and on a
// GPU the sustained timing mode (MPT_GEMM_TUNE_SUSTAINED=1) end to end: trials at the power cap with L2
// flushed, accumulating GEMMs still added into once, the observer hook's two timings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gemmTuning, pickFastest, tuningLog, type TuningTrial } from '../src/backend/cuda/cublaslt-api.js';
import { trainingBackend } from '../src/backend/backend.js';
import { close, cpu, cudaFor, down, pair, randn, skip } from './cuda-harness.js';

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
  Object.assign(gemmTuning, { minFlops: 0, stored: false, sustained: true, sustainedMs: 1, heatMs: 1, firstHeatMs: 2 });
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
