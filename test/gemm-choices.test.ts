// The tuned GEMM choices on disk (src/backend/cuda/gemm-choices.ts): a later process reads back what an
// earlier one chose, so both run the same algorithms. No GPU needed: the store only holds bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GemmChoices, gemmChoicesFile } from '../src/backend/cuda/gemm-choices.js';

test('a choice written by one store is read back by the next, byte for byte', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-gemm-'));
  try {
    const file = join(dir, 'gemm', 'card.json');
    const algo = Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 37) & 255));
    const first = new GemmChoices(file);
    assert.equal(first.get('lt:16384:2048'), undefined);
    first.set('lt:16384:2048', algo);
    first.set('gemm:2048:8192', Buffer.alloc(64, 7));
    const second = new GemmChoices(file);
    assert.deepEqual(second.get('lt:16384:2048'), algo);
    assert.deepEqual(second.get('gemm:2048:8192'), Buffer.alloc(64, 7));
    assert.deepEqual(readdirSync(join(dir, 'gemm')), ['card.json'], 'no temporary file is left behind');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an unreadable choices file means tuning again, and is replaced by a good one', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-gemm-'));
  try {
    const file = join(dir, 'card.json');
    writeFileSync(file, '{"half a fil');
    const store = new GemmChoices(file);
    assert.equal(store.get('anything'), undefined);
    store.set('k', Buffer.alloc(64, 1));
    assert.deepEqual(Object.keys(JSON.parse(readFileSync(file, 'utf8'))), ['k']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the file is named by the device and the cuBLASLt version, under the cache folder', () => {
  const saved = process.env.MPT_CACHE;
  process.env.MPT_CACHE = '/tmp/mpt-cache-x';
  try {
    assert.equal(gemmChoicesFile('NVIDIA H100 80GB HBM3', 130100), '/tmp/mpt-cache-x/gemm/NVIDIA_H100_80GB_HBM3-cublasLt130100.json');
  } finally {
    if (saved === undefined) delete process.env.MPT_CACHE; else process.env.MPT_CACHE = saved;
  }
});
