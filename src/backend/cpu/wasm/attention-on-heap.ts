import type { CpuPool } from '../pool.js';
import { combineDecodePartials, decodeScratchBytesPerPart, KEY_CHUNK, type WasmDecodeAttentionTask } from './attention-decode.js';
import { ROWS_PER_ITEM, scratchBytesPerPart, type WasmAttentionTask } from './attention-heads.js';
import type { WasmHeap } from './heap.js';
import { kernels } from './runtime.js';

/**
 * Attention through the wasm kernels: one or two queries (decode) split along the keys
 * (attention-decode.ts), more (a prompt) split over heads and blocks of queries (attention-heads.ts).
 * q is copied into the heap's scratch block;
 * k and v are read in place when they are on the heap (the CPU backend puts KV caches there), else
 * their first kvLen rows are copied in too. The pool's threads each get a part of the scratch for
 * their scores. Returns false, having done nothing, when the heap has no room for the scratch block
 * (the caller then runs the JS kernel).
 */
export interface HeapAttention {
  q: Float32Array; k: Float32Array; v: Float32Array; out: Float32Array; keyMask: Int32Array | null;
  batch: number; tq: number; capacity: number; kvLen: number; nHeads: number; dHead: number;
  scale: number; slopes: Float32Array | null;
}

/** Above this much scratch (k and v not on the heap and long), the JS kernel runs instead. */
const MAX_SCRATCH_BYTES = 256 * 1024 * 1024;

export function attentionOnHeap(heap: WasmHeap, pool: CpuPool, a: HeapAttention): boolean {
  const { batch, tq, capacity, kvLen, nHeads, dHead } = a;
  const d = nHeads * dHead;
  const align = (n: number) => Math.ceil(n / 64) * 64;
  const kAddress = heap.addressOf(a.k), vAddress = heap.addressOf(a.v);
  const copyKv = kAddress === null || vAddress === null;
  const decode = tq < ROWS_PER_ITEM;
  const chunks = Math.ceil(kvLen / KEY_CHUNK);
  const qBytes = align(batch * tq * d * 4);
  const kvBytes = copyKv ? align(batch * kvLen * d * 4) : 0;
  const accBytes = decode ? align(batch * tq * chunks * d * 4) : 0;
  const partBytes = decode ? decodeScratchBytesPerPart(nHeads) : scratchBytesPerPart(capacity, dHead);
  const total = qBytes + 2 * kvBytes + accBytes + pool.threads * partBytes;
  // The softmax turns padded keys into −∞ scores: that needs a positive scale (0 or less never occurs in MPT).
  if (total > MAX_SCRATCH_BYTES || !(a.scale > 0)) return false;
  const scratch = heap.scratch(total);
  if (scratch === null) return false;

  heap.float32View(scratch, batch * tq * d).set(a.q.subarray(0, batch * tq * d));
  let k = kAddress!, v = vAddress!, kvRows = capacity;
  if (copyKv) {
    k = scratch + qBytes;
    v = k + kvBytes;
    kvRows = kvLen;
    for (const [from, to] of [[a.k, k], [a.v, v]] as const) {
      const view = heap.float32View(to, batch * kvLen * d);
      for (let b = 0; b < batch; b++) view.set(from.subarray(b * capacity * d, (b * capacity + kvLen) * d), b * kvLen * d);
    }
  }
  const shared = {
    q: scratch, k, v, kvRows, keyMask: a.keyMask, capacity, batch, tq, kvLen, nHeads, dHead, scale: a.scale, slopes: a.slopes,
  };
  const parts = scratch + qBytes + 2 * kvBytes + accBytes;
  if (decode) {
    const task: WasmDecodeAttentionTask = {
      kind: 'attention-decode-wasm', ...shared, chunks, acc: scratch + qBytes + 2 * kvBytes,
      stats: new Float64Array(new SharedArrayBuffer(batch * tq * chunks * nHeads * 2 * 8)), scratch: parts, partBytes,
    };
    // Work per item: its keys' products with every head's query, for the scores and again for v.
    pool.run(task, 2 * KEY_CHUNK * d);
    combineDecodePartials(task, kernels().heapFloats(), a.out);
    return true;
  }
  const task: WasmAttentionTask = { kind: 'attention-wasm', ...shared, out: a.out, scratch: parts, partBytes };
  // Work per item: the products of its query rows with the keys, for the scores and again for v.
  pool.run(task, 2 * ROWS_PER_ITEM * kvLen * dHead);
  return true;
}
