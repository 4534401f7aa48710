// The rules for which bf16 matrices the TMA unit can describe (src/backend/cuda/tensor-map.ts): where
// they fail, the attention launches take their cp.async kernels. No GPU needed (the maps themselves are
// encoded by the driver and checked by the CUDA twins in cuda-flash*.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bf16RowsMaps, tmaDescribable, type Bf16Rows } from '../src/backend/cuda/tensor-map.js';

const qkv: Bf16Rows = { address: 1 << 20, columns: 2048, rows: 2048, batch: 8, rowStride: 6144, batchStride: 2048 * 6144, boxRows: 128 };

test('tmaDescribable: 16-byte-aligned addresses and row strides, blocks that do not overlap, boxes of 1 to 256 rows', () => {
  assert.equal(tmaDescribable(qkv), true, 'q of the training step: [batch, t, 3d] rows');
  assert.equal(tmaDescribable({ ...qkv, batch: 1, batchStride: 0 }), true, 'one block: its stride does not matter');
  assert.equal(tmaDescribable({ ...qkv, address: qkv.address + 8 }), false, 'an address 8 bytes off');
  assert.equal(tmaDescribable({ ...qkv, rowStride: 6148 }), false, 'a row stride of 12,296 bytes (not a multiple of 16)');
  assert.equal(tmaDescribable({ ...qkv, rowStride: 1024 }), false, 'rows narrower than their columns');
  assert.equal(tmaDescribable({ ...qkv, batchStride: 2047 * 6144 }), false, 'blocks that overlap');
  assert.equal(tmaDescribable({ ...qkv, boxRows: 257 }), false, 'a box of more than 256 rows');
  assert.equal(tmaDescribable({ ...qkv, rows: 0 }), false, 'no rows');
});

test('bf16RowsMaps: undefined (the cp.async kernel) as soon as one matrix of the launch cannot be described', () => {
  // Returns before any driver call, so this runs without a GPU.
  assert.equal(bf16RowsMaps([qkv, { ...qkv, address: qkv.address + 2 }]), undefined);
});
