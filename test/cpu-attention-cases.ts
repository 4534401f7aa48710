import assert from 'node:assert/strict';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { attentionHead, type AttentionProblem } from '../src/backend/cpu/kernels/attention.js';
import { allocate, CpuTensor } from '../src/backend/cpu/tensor.js';
import { sharedHeap } from '../src/backend/cpu/wasm/heap.js';
import { Rng } from '../src/util/random.js';

/** Shared by the cpu-attention tests: a random attention problem run through the backend and through the float64 JS kernel. */
export interface Case { batch: number; nHeads: number; dHead: number; capacity: number; kvLen: number; tq: number; alibi: boolean; padded: boolean }

function randomArray(rng: Rng, n: number, spread: number): Float32Array {
  return Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * spread);
}

export function run(c: Case, backend: CpuBackend, onHeap: boolean, seed: number) {
  const rng = new Rng(seed);
  const d = c.nHeads * c.dHead;
  // Scores of a few units, as QK LayerNorm'd models have, so the softmax is neither flat nor one-hot.
  const q = randomArray(rng, c.batch * c.tq * d, 2), kData = randomArray(rng, c.batch * c.capacity * d, 2), vData = randomArray(rng, c.batch * c.capacity * d, 1);
  const k = onHeap ? backend.zeros([c.batch, c.capacity, d], 'float32') : allocate([c.batch, c.capacity, d], 'float32');
  const v = onHeap ? backend.zeros([c.batch, c.capacity, d], 'float32') : allocate([c.batch, c.capacity, d], 'float32');
  (k as CpuTensor).f32.set(kData);
  (v as CpuTensor).f32.set(vData);
  assert.equal(backend.onHeap(k), onHeap, 'the KV buffers are where this case wants them');
  const slopes = c.alibi ? Float32Array.from({ length: c.nHeads }, (_, h) => 2 ** (-8 * (h + 1) / c.nHeads)) : null;
  let mask: Int32Array | null = null;
  if (c.padded) {
    // Row b is left-padded by 3·b + 2 positions (row 0 too), so some queries of a prompt sit on padding.
    mask = new Int32Array(c.batch * c.capacity);
    for (let b = 0; b < c.batch; b++) for (let j = 0; j < c.capacity; j++) mask[b * c.capacity + j] = j < 3 * b + 2 ? 0 : 1;
  }
  const scale = 1 / Math.sqrt(c.dHead);
  const qTensor = backend.upload(q, [c.batch, c.tq, d], 'float32');
  const got = backend.download(backend.attention({
    q: qTensor, k, v, kvLen: c.kvLen, nHeads: c.nHeads, scale, alibiSlopes: slopes,
    keyMask: mask ? backend.upload(mask, [c.batch, c.capacity], 'int32') : null,
  })) as Float32Array;

  const want = new Float32Array(c.batch * c.tq * d);
  const problem: AttentionProblem = { q, k: kData, v: vData, out: want, keyMask: mask, tq: c.tq, capacity: c.capacity, kvLen: c.kvLen, nHeads: c.nHeads, dHead: c.dHead, scale, slopes };
  for (let b = 0; b < c.batch; b++) for (let h = 0; h < c.nHeads; h++) attentionHead(problem, b, h, 0, c.tq);
  return { got, want, kAddress: sharedHeap()?.addressOf((k as CpuTensor).data) ?? null };
}

/**
 * Float32 rounding, bounded by adding the worst cases: a score q·k (dHead products, |q·k|·scale ≤
 * 4·dHead·scale here) carries ~(dHead/8 + 4)·2⁻²⁴ of that (8 partial sums); the scaled, ALiBi-biased
 * score one rounding more (|s| ≤ 4·dHead·scale + kvLen·slope, slope < 1) and exp a few ulps; each moves
 * a softmax weight by as much relatively. The weighted sum of kvLen values (|v| ≤ 1) carries
 * ~kvLen·2⁻²⁴. Measured errors are far below the bound (set SHOW_ERRORS=1 to print them), and a
 * wrong index or a lost term shows far above it.
 */
export function tolerance(c: Case): number {
  const eps = 2 ** -24;
  return 4 * eps * ((c.dHead / 8 + 5) * 4 * c.dHead / Math.sqrt(c.dHead) + 2 * c.kvLen + 16);
}
