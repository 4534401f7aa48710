// The tables of the multi-tensor kernels (adamw_multi, sum_squares_multi), on the CPU: what they hold
// and when they go up again. A stand-in for the backend records allocations and uploads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MultiTensorTables } from '../src/backend/cuda/multi-tensor.js';
import type { CudaBackend } from '../src/backend/cuda/index.js';

function fakeBackend() {
  let next = 0x1000;
  const released: number[] = [];
  const be = {
    persistent: (shape: number[]) => ({ shape, ptr: (next += 0x1000) }),
    release: (t: { ptr: number }) => { released.push(t.ptr); },
  };
  return { be: be as unknown as CudaBackend, released };
}

test('multi-tensor tables: a (tensor, chunk) pair for every chunk, the fields as 64-bit values, uploaded again only when they change', () => {
  const { be, released } = fakeBackend();
  const uploads: Array<{ dst: number; data: Int32Array | BigInt64Array }> = [];
  const tables = new MultiTensorTables(be, 4, (dst, data) => uploads.push({ dst, data: data as Int32Array | BigInt64Array }));
  const first = tables.update([9, 4, 1], [[0x100, 9], [0x200, 4], [0x300, 1]]);
  assert.equal(first.count, 3 + 1 + 1);
  assert.deepEqual([...(uploads[0].data as Int32Array)], [0, 0, 0, 1, 0, 2, 1, 0, 2, 0]);
  assert.equal(uploads[0].dst, first.chunks);
  assert.deepEqual([...(uploads[1].data as BigInt64Array)], [0x100n, 9n, 0x200n, 4n, 0x300n, 1n]);
  assert.equal(uploads[1].dst, first.tensors);

  assert.deepEqual(tables.update([9, 4, 1], [[0x100, 9], [0x200, 4], [0x300, 1]]), first, 'the same tensors: the same tables');
  assert.equal(uploads.length, 2, 'nothing uploaded again');

  const moved = tables.update([9, 4, 1], [[0x900, 9], [0x200, 4], [0x300, 1]]);
  assert.equal(uploads.length, 3, 'new addresses: the tensor table only');
  assert.equal(moved.chunks, first.chunks);
  assert.equal(moved.tensors, first.tensors, 'a table of the same size is rewritten in place');

  const resized = tables.update([5], [[0x900, 5]]);
  assert.equal(resized.count, 2);
  assert.deepEqual([...(uploads[3].data as Int32Array)], [0, 0, 0, 1]);
  assert.deepEqual(released, [first.chunks, first.tensors], 'the old chunk table and the tensor table of another size go back');
  assert.notEqual(resized.tensors, first.tensors);
});
