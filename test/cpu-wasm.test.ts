import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { linearColumns } from '../src/backend/cpu/kernels/linear.js';
import { sleb, uleb } from '../src/backend/cpu/wasm/emitter.js';
import { WasmHeap } from '../src/backend/cpu/wasm/heap.js';
import { float32ToBfloat16Bits, bfloat16BitsToFloat32 } from '../src/util/dtype.js';
import { Rng } from '../src/util/random.js';

/**
 * The wasm fast path against the plain JS kernels (the readable reference), on fresh random inputs of
 * awkward sizes: widths that are not multiples of 8 (the tail the JS side adds), row counts around the
 * 3-row tiles, prefill shapes whose weight spans several cache blocks of columns, both weight dtypes,
 * with and without bias, on one thread and split over two.
 */

test('LEB128 encodings match the spec examples', () => {
  assert.deepEqual(uleb(0), [0]);
  assert.deepEqual(uleb(624485), [0xe5, 0x8e, 0x26]);
  assert.deepEqual(uleb(65536), [0x80, 0x80, 0x04]);
  assert.deepEqual(uleb(2 ** 32 - 1), [0xff, 0xff, 0xff, 0xff, 0x0f]);
  assert.deepEqual(sleb(-123456), [0xc0, 0xbb, 0x78]);
  assert.deepEqual(sleb(63), [0x3f]);
  assert.deepEqual(sleb(64), [0xc0, 0x00]);
  assert.deepEqual(sleb(-64), [0x40]);
  assert.deepEqual(sleb(-65), [0xbf, 0x7f]);
});

test('the heap allocates aligned blocks, reuses and merges freed ones, and grows', () => {
  const heap = new WasmHeap(1024); // 64 MiB at most
  const a = heap.allocate(100)!, b = heap.allocate(1000)!, c = heap.allocate(10)!;
  for (const p of [a, b, c]) assert.equal(p % 64, 0);
  assert.ok(a > 0 && b >= a + 100 && c >= b + 1000, 'blocks do not overlap');
  heap.free(a);
  heap.free(b);
  assert.equal(heap.allocate(1100), a, 'the two freed neighbours merged into one block that fits');
  heap.free(c);
  heap.free(c); // freeing twice is harmless
  const big = heap.allocate(10 * 1024 * 1024)!;
  assert.ok(big !== null && heap.memory.buffer.byteLength >= big + 10 * 1024 * 1024, 'the memory grew');
  assert.equal(heap.allocate(100 * 1024 * 1024), null, 'over the maximum: null, not a throw');
  heap.free(big);
  assert.ok(heap.top <= big, 'freeing the topmost block lowers the top');

  const array = heap.array('bfloat16', 33)! as Uint16Array;
  const address = heap.addressOf(array)!;
  assert.equal(array.length, 33);
  assert.ok(array.every((v) => v === 0));
  assert.equal(heap.addressOf(new Uint16Array(33)), null, 'an ordinary array is not on the heap');
  heap.releaseArray(array);
  assert.equal(heap.allocate(66), address, 'a released array gives its block back');
});

function randomInput(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal());
}

/** The reference (float64 sums) and a bound on float32 summation error: (terms/8 + 4)·2⁻²⁴·Σ|x·w| (8 partial sums). */
function reference(x: Float32Array, w: Float32Array | Uint16Array, bias: Float32Array | null, rows: number, inWidth: number, outWidth: number) {
  const out = new Float32Array(rows * outWidth);
  linearColumns(x, w, bias, out, rows, inWidth, outWidth, 0, outWidth);
  const bound = new Float64Array(rows * outWidth);
  const value = (i: number) => (w instanceof Uint16Array ? bfloat16BitsToFloat32(w[i]) : w[i]);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < outWidth; j++) {
      let magnitude = bias ? Math.abs(bias[j]) : 0;
      for (let k = 0; k < inWidth; k++) magnitude += Math.abs(x[i * inWidth + k] * value(j * inWidth + k));
      bound[i * outWidth + j] = (inWidth / 8 + 4) * 2 ** -24 * magnitude + 1e-30;
    }
  }
  return { out, bound };
}

const SHAPES = [
  // [rows, inWidth, outWidth]
  [1, 8, 1], [1, 9, 3], [1, 64, 4], [1, 77, 13], [2, 16, 5], [3, 31, 9], [4, 8, 7], [5, 40, 17],
  [7, 129, 6], [8, 64, 33], [9, 23, 2], [13, 100, 11],
  [5, 2056, 70], // 31 weight rows of float32 (62 of bfloat16) per cache block: several blocks
  [1, 4104, 8], [4, 4105, 5], // one row of a wide input takes 1×3 tiles (and 1×1 for the rest)
];

for (const dtype of ['bfloat16', 'float32'] as const) {
  for (const withBias of [false, true]) {
    test(`wasm linear equals the JS reference: ${dtype} weights, ${withBias ? 'with' : 'no'} bias, awkward sizes`, () => {
      const be = new CpuBackend({ threads: 1 });
      const rng = new Rng(dtype === 'float32' ? 11 : 12 + Number(withBias));
      for (const [rows, inWidth, outWidth] of SHAPES) {
        const x = randomInput(rng, rows * inWidth);
        const w32 = randomInput(rng, outWidth * inWidth);
        const w = dtype === 'bfloat16' ? Uint16Array.from(w32, float32ToBfloat16Bits) : w32;
        const bias = withBias ? randomInput(rng, outWidth) : null;
        const weight = be.upload(w, [outWidth, inWidth], dtype);
        assert.ok(be.onHeap(weight), 'the weight is on the wasm heap');
        const got = be.download(be.linear(be.upload(x, [rows, inWidth], 'float32'), weight, bias ? be.upload(bias, [outWidth], 'float32') : null));
        const { out, bound } = reference(x, w, bias, rows, inWidth, outWidth);
        for (let i = 0; i < out.length; i++) {
          assert.ok(Math.abs(got[i] - out[i]) <= bound[i], `[${rows}, ${inWidth}] × [${outWidth}]ᵀ at ${i}: ${got[i]} vs ${out[i]} (bound ${bound[i]})`);
        }
      }
    });
  }
}

test('wasm linear split over two threads, with prefill-sized row blocks, equals the JS reference', () => {
  const be = new CpuBackend({ threads: 2 });
  const rng = new Rng(99);
  for (const [rows, inWidth, outWidth] of [[1, 1000, 203], [6, 1000, 301], [17, 264, 390]]) {
    const x = randomInput(rng, rows * inWidth);
    const w = Uint16Array.from(randomInput(rng, outWidth * inWidth), float32ToBfloat16Bits);
    const got = be.download(be.linear(be.upload(x, [rows, inWidth], 'float32'), be.upload(w, [outWidth, inWidth], 'bfloat16'), null));
    const { out, bound } = reference(x, w, null, rows, inWidth, outWidth);
    for (let i = 0; i < out.length; i++) assert.ok(Math.abs(got[i] - out[i]) <= bound[i], `[${rows}, ${inWidth}] × [${outWidth}]ᵀ at ${i}`);
  }
});

test('{ wasm: false } keeps weights off the heap and on the JS kernels', () => {
  const be = new CpuBackend({ threads: 1, wasm: false });
  const w = be.upload(new Float32Array(64), [8, 8], 'float32');
  assert.equal(be.onHeap(w), false);
});

test('bfloat16 zeros go to the heap, float32 zeros (KV caches) do not; release frees heap storage', () => {
  const be = new CpuBackend({ threads: 1 });
  assert.ok(be.onHeap(be.zeros([16, 8], 'bfloat16')));
  assert.equal(be.onHeap(be.zeros([16, 8], 'float32')), false);
  const t = be.zeros([4096], 'bfloat16');
  be.release(t);
  be.release(t); // twice is harmless
});
