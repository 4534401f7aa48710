import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { asCpu } from '../src/backend/cpu/tensor.js';

// CpuBackend.scope recycles the activations that die inside it (src/backend/cpu/recycler.ts).
const be = new CpuBackend({ threads: 1, wasm: false });
const values = (n: number, v: number) => Float32Array.from({ length: n }, (_, i) => v + i);

test('a dead activation\'s buffer is reused, zero-filled, by the next allocation of its size; the result\'s is not', () => {
  const x = be.upload(values(64, 1), [8, 8], 'float32');
  let dead: ArrayBufferLike | null = null;
  const kept = be.scope(() => {
    const a = be.add(x, x);
    dead = asCpu(a).data.buffer;
    return be.view(be.add(a, x), [64]); // a view: its buffer is the result's
  });
  assert.deepEqual(Array.from(asCpu(kept).f32.subarray(0, 3)), [3, 6, 9]);
  const next = be.scope(() => be.zeros([8, 8]));
  assert.equal(asCpu(next).data.buffer, dead, 'the dead buffer came back');
  assert.ok(asCpu(next).f32.every((v) => v === 0), 'zero-filled like a new one');
  assert.notEqual(asCpu(next).data.buffer, asCpu(kept).data.buffer);
  assert.deepEqual(Array.from(asCpu(kept).f32.subarray(0, 3)), [3, 6, 9], 'the result was not touched');
});

test('what an inner scope returns lives on in the outer one and is recycled when that one ends without it', () => {
  const x = be.upload(values(16, 0), [4, 4], 'float32');
  let inner: ArrayBufferLike | null = null;
  const outer = be.scope(() => {
    const fromInner = be.scope(() => be.add(x, x));
    inner = asCpu(fromInner).data.buffer;
    const other = be.scope(() => be.add(x, x)); // must not get fromInner's buffer: it is alive
    assert.notEqual(asCpu(other).data.buffer, inner);
    assert.deepEqual(Array.from(asCpu(fromInner).f32.subarray(0, 3)), [0, 2, 4]);
    return { total: be.add(fromInner, other) };
  });
  assert.equal(asCpu(outer.total).f32[1], 4);
  const after = be.scope(() => [be.zeros([4, 4]), be.zeros([4, 4]), be.zeros([4, 4])]);
  assert.ok(after.some((t) => asCpu(t).data.buffer === inner), 'recycled once the outer scope dropped it');
  assert.notEqual(asCpu(after[0]).data.buffer, asCpu(after[1]).data.buffer);
  assert.notEqual(asCpu(after[1]).data.buffer, asCpu(after[2]).data.buffer);
});

test('a scope that throws recycles nothing', () => {
  const x = be.upload(values(4, 0), [2, 2], 'float32');
  let made: ArrayBufferLike | null = null;
  assert.throws(() => be.scope(() => {
    made = asCpu(be.add(x, x)).data.buffer;
    throw new Error('boom');
  }), /boom/);
  const next = be.scope(() => be.add(x, x));
  assert.notEqual(asCpu(next).data.buffer, made);
});
