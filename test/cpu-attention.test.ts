import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { kernels } from '../src/backend/cpu/wasm/runtime.js';
import { sharedHeap } from '../src/backend/cpu/wasm/heap.js';
import { run, tolerance, type Case } from './cpu-attention-cases.js';

/**
 * The wasm attention path (src/backend/cpu/wasm/attention-*.ts) against the JS kernel with float64
 * sums (kernels/attention.ts), on fresh random inputs of awkward sizes: head widths that leave tails
 * for the 8-wide score tile and the 32/4-wide value sums, key counts that are multiples of nothing,
 * one query (decode) and several (a prompt, and a chunk after a cache), ALiBi on and off, left padding,
 * k and v on the wasm heap (read in place) and off it (copied in), one thread and two.
 */

const cases: Case[] = [
  { batch: 2, nHeads: 3, dHead: 20, capacity: 41, kvLen: 37, tq: 1, alibi: true, padded: false },
  { batch: 2, nHeads: 3, dHead: 20, capacity: 41, kvLen: 37, tq: 13, alibi: true, padded: true },
  { batch: 2, nHeads: 3, dHead: 45, capacity: 50, kvLen: 50, tq: 50, alibi: false, padded: true },
  { batch: 1, nHeads: 2, dHead: 128, capacity: 333, kvLen: 301, tq: 1, alibi: true, padded: true },
  { batch: 1, nHeads: 5, dHead: 128, capacity: 333, kvLen: 301, tq: 7, alibi: false, padded: false },
  { batch: 3, nHeads: 4, dHead: 16, capacity: 29, kvLen: 29, tq: 29, alibi: true, padded: true },
  { batch: 1, nHeads: 1, dHead: 3, capacity: 9, kvLen: 5, tq: 2, alibi: true, padded: false },
];

for (const threads of [1, 2]) {
  const backend = new CpuBackend({ threads });
  for (const onHeap of [true, false]) {
    test(`wasm attention matches the float64 JS kernel (${threads} thread${threads > 1 ? 's' : ''}, k/v ${onHeap ? 'on' : 'off'} the heap)`, () => {
      let differs = false;
      cases.forEach((c, i) => {
        const { got, want } = run(c, backend, onHeap, 1000 * threads + 10 * i + (onHeap ? 1 : 0));
        differs ||= got.some((x, n) => x !== want[n]);
        const tol = tolerance(c);
        let worst = 0;
        for (let n = 0; n < want.length; n++) worst = Math.max(worst, Math.abs(got[n] - want[n]));
        if (process.env.SHOW_ERRORS) console.log(i, worst.toExponential(2), tol.toExponential(2));
        assert.ok(worst <= tol, `case ${JSON.stringify(c)}: max |error| ${worst.toExponential(2)} > ${tol.toExponential(2)}`);
        assert.ok(want.some((x) => x !== 0), 'the reference is not all zeros');
      });
      // float32 sums never give all the float64 kernel's results: equality would mean the JS kernel ran (a fallback).
      assert.ok(differs, 'the wasm path ran');
    });
  }
}

test('a padded query gets zeros and a real one ignores padded keys, as the reference', () => {
  const backend = new CpuBackend({ threads: 1 });
  const c: Case = { batch: 1, nHeads: 2, dHead: 8, capacity: 6, kvLen: 6, tq: 6, alibi: true, padded: true };
  const { got, want } = run(c, backend, true, 7);
  const d = c.nHeads * c.dHead;
  assert.ok(got.subarray(0, 2 * d).every((x) => x === 0), 'the two padding positions give zeros');
  for (let n = 0; n < want.length; n++) assert.ok(Math.abs(got[n] - want[n]) <= tolerance(c));
});

test('with MPT_WASM_ATTENTION=0 the JS kernel runs, and KV caches stay off the heap', () => {
  const saved = process.env.MPT_WASM_ATTENTION;
  process.env.MPT_WASM_ATTENTION = '0';
  try {
    const backend = new CpuBackend({ threads: 1 });
    assert.equal(backend.onHeap(backend.zeros([1, 4, 8], 'float32')), false);
  } finally {
    if (saved === undefined) delete process.env.MPT_WASM_ATTENTION;
    else process.env.MPT_WASM_ATTENTION = saved;
  }
  assert.equal(new CpuBackend({ threads: 1 }).onHeap(new CpuBackend({ threads: 1 }).zeros([1, 4, 8], 'float32')), true);
});

test('the wasm softmax passes: biased scores and their max, exp within a few float32 ulps', () => {
  const heap = sharedHeap();
  if (!heap) return; // no wasm here: nothing to test
  const n = 4000;
  const row = heap.array('float32', n) as Float32Array;
  const raw = Float32Array.from({ length: n }, (_, j) => Math.sin(j * 0.37) * 300);
  row.set(raw);
  // float32 parameters, as the kernel receives them (the attention tests cover their rounding).
  const scale = Math.fround(0.3), slope = Math.fround(0.01), pos = n - 1;
  const max = kernels().biasedScores(heap.addressOf(row)!, n / 4, scale, slope, pos);
  let wantMax = -Infinity;
  for (let j = 0; j < n; j++) {
    const scaled = raw[j] * scale, bias = (j - pos) * slope, s = scaled + bias;
    // Three float32 roundings: the product, the bias and their sum, each of half an ulp of its terms.
    assert.ok(Math.abs(row[j] - s) <= 2 ** -23 * (Math.abs(scaled) + Math.abs(bias)), `s_${j}: ${row[j]} vs ${s}`);
    wantMax = Math.max(wantMax, row[j]);
  }
  assert.equal(max, wantMax);
  const scores = row.slice();
  kernels().expShifted(heap.addressOf(row)!, n / 4, max);
  let worstUlps = 0;
  for (let j = 0; j < n; j++) {
    // The difference in float32, as the kernel takes it: that rounding is the attention tests' business.
    const x = Math.fround(scores[j] - max);
    const want = Math.exp(x);
    if (x < -87) { assert.ok(row[j] <= 1.7e-38 && row[j] >= 0, `exp(${x}) came out ${row[j]}`); continue; }
    worstUlps = Math.max(worstUlps, Math.abs(row[j] - want) / (want * 2 ** -23));
  }
  assert.ok(worstUlps <= 4, `exp is ${worstUlps.toFixed(2)} ulps off`);
  if (process.env.SHOW_ERRORS) console.log('exp worst ulps', worstUlps);
  heap.releaseArray(row);
});
