import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { sharedHeap } from '../src/backend/cpu/wasm/heap.js';
import { run, tolerance, type Case } from './cpu-attention-cases.js';

/**
 * With the 1.3B model's weights loaded the KV caches sit above 2 GiB on the wasm heap, where a signed
 * 32-bit shift of a byte address (`>> 2`) goes negative and reads garbage silently. Reserving 2 GiB
 * first puts this test's caches there; the reserved block is never written, so it stays virtual
 * memory (a fresh heap block is not touched) and costs no RAM. Own file: own process, own heap.
 */
test('wasm attention reads KV caches above 2 GiB of the heap correctly', () => {
  const heap = sharedHeap();
  if (!heap) return; // no wasm here: the JS kernel runs and there is nothing to test
  const reserved = heap.allocate(2 ** 31 + 4096);
  assert.ok(reserved !== null, 'the heap can reserve 2 GiB');
  const backend = new CpuBackend({ threads: 2 });
  const cases: Case[] = [
    { batch: 2, nHeads: 3, dHead: 20, capacity: 300, kvLen: 290, tq: 1, alibi: true, padded: true },
    { batch: 1, nHeads: 2, dHead: 36, capacity: 40, kvLen: 40, tq: 40, alibi: true, padded: false },
  ];
  cases.forEach((c, i) => {
    const { got, want, kAddress } = run(c, backend, true, 77 + i);
    assert.ok(kAddress !== null && kAddress >= 2 ** 31, `the cache is above 2 GiB (at ${kAddress})`);
    for (let n = 0; n < want.length; n++) assert.ok(Math.abs(got[n] - want[n]) <= tolerance(c), `case ${i}, element ${n}: ${got[n]} vs ${want[n]}`);
  });
  assert.ok(process.memoryUsage().rss < 1e9, 'the reserved block stayed virtual');
});
