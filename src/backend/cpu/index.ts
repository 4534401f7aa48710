import type { AttentionArgs, Backend, DType, HostArray, Tensor } from '../backend.js';
import { elementCount, rowCount, width } from '../backend.js';
import { UserError } from '../../util/errors.js';
import { float16ToFloat32Array } from '../../util/dtype.js';
import { layerNormRows } from './kernels/norm.js';
import { CpuPool } from './pool.js';
import { CpuTrainingOps } from './training.js';
import { allocate, asCpu, CpuTensor } from './tensor.js';
import { BufferRecycler, recyclingScope } from './recycler.js';
import { sharedHeap, type WasmHeap } from './wasm/heap.js';
import { attentionOnHeap } from './wasm/attention-on-heap.js';
import { linearOnHeap } from './wasm/linear-on-heap.js';

/**
 * The reference backend: float32 activations, float32 or bfloat16 weights, plain loops that read like
 * the math. Linear layers and attention are split across cores; everything else is one loop.
 *
 * The fast path: uploaded float tensors (weights) and bfloat16 zeros live on the wasm heap
 * (wasm/heap.ts) when it has room, and a linear layer whose weight is there runs generated SIMD
 * kernels (wasm/linear-module.ts) instead of the JS loops in kernels/linear.ts, which stay the
 * reference the fast path is tested against. KV caches go to the heap too, and attention runs generated
 * SIMD kernels over them in place (wasm/attention-on-heap.ts; kernels/attention.ts is its reference).
 * `{ wasm: false }` or MPT_WASM=0 keeps everything in JS; MPT_WASM_ATTENTION=0 only attention.
 */
export class CpuBackend implements Backend {
  readonly name = 'cpu' as const;
  readonly activationDType: DType = 'float32';
  readonly pool: CpuPool;
  private readonly heap: WasmHeap | null;
  /** Attention through the wasm kernels (wasm/attention-heads.ts); off with MPT_WASM_ATTENTION=0, to time the JS kernel beside them. */
  private readonly wasmAttention: boolean;
  private readonly recycler = new BufferRecycler();

  constructor(options: { threads?: number; wasm?: boolean } = {}) {
    this.pool = new CpuPool(options.threads);
    this.heap = options.wasm === false ? null : sharedHeap();
    this.wasmAttention = this.heap !== null && process.env.MPT_WASM_ATTENTION !== '0';
  }

  /** Whether `t`'s storage is on the wasm heap (its linear layers take the SIMD path). */
  onHeap(t: Tensor): boolean {
    return this.heap !== null && this.heap.addressOf(asCpu(t).data) !== null;
  }

  upload(data: HostArray, shape: readonly number[], dtype: DType): CpuTensor {
    if (data.length !== elementCount(shape)) throw new Error(`upload of shape [${shape}] given ${data.length} values`);
    if (dtype === 'float16') {
      const t = this.allocateWeight(shape, 'float32');
      float16ToFloat32Array(data as Uint16Array, t.f32);
      return t;
    }
    const t = dtype === 'int32' ? allocate(shape, dtype) : this.allocateWeight(shape, dtype);
    t.data.set(data as never);
    return t;
  }

  /** A float tensor on the wasm heap when there is one with room, else in an ordinary shared buffer. */
  private allocateWeight(shape: readonly number[], dtype: 'float32' | 'bfloat16'): CpuTensor {
    const data = this.heap?.array(dtype, elementCount(shape));
    if (data) return new CpuTensor(shape, dtype, data);
    if (this.heap) warnHeapFull();
    return allocate(shape, dtype);
  }

  download(t: Tensor): Float32Array | Int32Array {
    const c = asCpu(t);
    if (c.data instanceof Uint16Array) {
      const out = new Float32Array(c.data.length);
      new Uint32Array(out.buffer).set(Uint32Array.from(c.data, (b) => b << 16));
      return out;
    }
    return c.data.slice();
  }

  /**
   * bfloat16 zeros (weights to be filled in place) go to the wasm heap, and so do float32 ones of rank
   * 3, [batch, capacity, d]: the KV caches (model/kv-cache.ts), which the attention kernel then reads in
   * place instead of copying a layer's whole cache per step. Other float32 zeros (gradients, optimizer
   * state) stay in ordinary buffers, leaving the heap's room to weights and caches.
   */
  zeros(shape: readonly number[], dtype: DType = 'float32'): CpuTensor {
    if (dtype === 'bfloat16') return this.allocateWeight(shape, dtype);
    if (dtype === 'float32' && shape.length === 3 && this.wasmAttention) {
      const data = this.heap?.array('float32', elementCount(shape));
      if (data) return new CpuTensor(shape, dtype, data);
    }
    return allocate(shape, dtype);
  }

  view(t: Tensor, shape: readonly number[]): CpuTensor {
    if (elementCount(shape) !== elementCount(t.shape)) throw new Error(`cannot view [${t.shape}] as [${shape}]`);
    return new CpuTensor(shape, t.dtype, asCpu(t).data);
  }

  /**
   * Activations allocated inside `fn` and not reachable from its result go back to a recycler for the
   * next allocations of their size (recycler.ts); weights and caches on the wasm heap are not touched.
   */
  scope<T>(fn: () => T): T {
    return recyclingScope(this.recycler, fn, reachableBuffers);
  }

  /** Frees heap storage now; everything else is the garbage collector's. */
  release(t: Tensor): void {
    this.heap?.releaseArray(asCpu(t).data);
  }

  embedding(ids: Tensor, table: Tensor): CpuTensor {
    const idData = asCpu(ids).data as Int32Array;
    const [vocab, d] = table.shape;
    const source = asCpu(table);
    const out = allocate([idData.length, d], 'float32');
    for (let i = 0; i < idData.length; i++) {
      const id = idData[i];
      if (!(id >= 0 && id < vocab)) throw new UserError(`token id ${id} is out of range: the vocabulary has ${vocab} entries (0…${vocab - 1})`);
      const row = rowOf(source, id, d);
      out.f32.set(row, i * d);
    }
    return out;
  }

  add(a: Tensor, b: Tensor): CpuTensor {
    const x = asCpu(a).f32, y = asCpu(b).f32;
    if (x.length !== y.length) throw new Error(`add of [${a.shape}] and [${b.shape}]`);
    const out = allocate(a.shape, 'float32');
    for (let i = 0; i < x.length; i++) out.f32[i] = x[i] + y[i];
    return out;
  }

  layerNorm(x: Tensor, weight: Tensor, bias: Tensor | null, eps: number): CpuTensor {
    const out = allocate(x.shape, 'float32');
    layerNormRows(asCpu(x).f32, floats(weight), bias ? floats(bias) : null, out.f32, rowCount(x), width(x), eps);
    return out;
  }

  linear(x: Tensor, weight: Tensor, bias: Tensor | null): CpuTensor {
    const [outWidth, inWidth] = weight.shape;
    if (width(x) !== inWidth) throw new Error(`linear: input width ${width(x)} but weight [${weight.shape}]`);
    const rows = rowCount(x);
    const out = allocate([...x.shape.slice(0, -1), outWidth], 'float32');
    const w = asCpu(weight).data as Float32Array | Uint16Array;
    const x32 = asCpu(x).f32, b32 = bias ? floats(bias) : null;
    const wAddress = this.heap?.addressOf(w) ?? null;
    if (wAddress !== null && inWidth >= 8 && linearOnHeap(this.heap!, this.pool, x32, w, wAddress, b32, out.f32, rows, inWidth, outWidth)) {
      return out;
    }
    this.pool.run({ kind: 'linear', x: asCpu(x).f32, w, bias: bias ? floats(bias) : null, out: out.f32, rows, inWidth, outWidth }, rows * inWidth);
    return out;
  }

  /**
   * Through geluFast: within a float32 ulp of the exact series (kernels/gelu.ts), at a fraction of its
   * cost; split across threads for two rows of the 1.3B MLP's 8192-wide hidden layer or more (one row
   * measured faster on one thread: 0.17 ms against 0.26 ms split).
   */
  gelu(x: Tensor): CpuTensor {
    const out = allocate(x.shape, 'float32');
    this.pool.run({ kind: 'gelu', x: asCpu(x).f32, out: out.f32 }, GELU_WORK_PER_ELEMENT);
    return out;
  }

  clamp(x: Tensor, limit: number): CpuTensor {
    return this.map(x, (v) => Math.min(Math.max(v, -limit), limit));
  }

  scale(x: Tensor, factor: number): CpuTensor {
    return this.map(x, (v) => v * factor);
  }

  columns(x: Tensor, start: number, count: number): CpuTensor {
    const w = width(x), rows = rowCount(x), src = asCpu(x).f32;
    const out = allocate([...x.shape.slice(0, -1), count], 'float32');
    for (let r = 0; r < rows; r++) out.f32.set(src.subarray(r * w + start, r * w + start + count), r * count);
    return out;
  }

  rows(x: Tensor, indices: readonly number[]): CpuTensor {
    const w = width(x), src = asCpu(x).f32;
    const out = allocate([indices.length, w], 'float32');
    indices.forEach((r, i) => out.f32.set(src.subarray(r * w, (r + 1) * w), i * w));
    return out;
  }

  writeRows(dst: Tensor, src: Tensor, at: number): void {
    const [batch, capacity, w] = dst.shape;
    const t = src.shape[1];
    if (at + t > capacity) throw new Error(`writeRows: ${at} + ${t} rows exceed the capacity ${capacity}`);
    const d = asCpu(dst).f32, s = asCpu(src).f32;
    for (let b = 0; b < batch; b++) d.set(s.subarray(b * t * w, (b + 1) * t * w), (b * capacity + at) * w);
  }

  attention(args: AttentionArgs): CpuTensor {
    const [batch, tq, d] = args.q.shape;
    const capacity = args.k.shape[1];
    const out = allocate([batch, tq, d], 'float32');
    const problem = {
      q: asCpu(args.q).f32, k: asCpu(args.k).f32, v: asCpu(args.v).f32, out: out.f32,
      keyMask: args.keyMask ? (asCpu(args.keyMask).data as Int32Array) : null,
      tq, capacity, kvLen: args.kvLen, nHeads: args.nHeads, dHead: d / args.nHeads,
      scale: args.scale, slopes: args.alibiSlopes,
    };
    if (this.heap && this.wasmAttention && attentionOnHeap(this.heap, this.pool, { ...problem, batch })) return out;
    this.pool.run({ kind: 'attention', problem }, tq * args.kvLen * (d / args.nHeads));
    return out;
  }

  private map(x: Tensor, f: (v: number) => number): CpuTensor {
    const src = asCpu(x).f32;
    const out = allocate(x.shape, 'float32');
    for (let i = 0; i < src.length; i++) out.f32[i] = f(src[i]);
    return out;
  }

  // ---- Training ops: backward and optimizer, implemented in ./training.ts (see Backend for each). ----
  private trainingOps: CpuTrainingOps | undefined;
  private get training(): CpuTrainingOps { return (this.trainingOps ??= new CpuTrainingOps(this.pool)); }
  attentionForTraining(args: AttentionArgs) { return this.training.attentionForTraining(args); }
  attentionBackward(args: AttentionArgs, out: Tensor, logSumExp: Tensor, dOut: Tensor) { return this.training.attentionBackward(args, out, logSumExp, dOut); }
  linearBackwardInto(a: Parameters<CpuTrainingOps['linearBackwardInto']>[0]) { return this.training.linearBackwardInto(a); }
  layerNormBackwardInto(a: Parameters<CpuTrainingOps['layerNormBackwardInto']>[0]) { return this.training.layerNormBackwardInto(a); }
  linearResidual(x: Tensor, weight: Tensor, bias: Tensor | null, residual: Tensor) { return this.add(residual, this.linear(x, weight, bias)); }
  rowBlock(t: Tensor, start: number, count: number) { return this.training.rowBlock(t, start, count); }
  geluBackward(dy: Tensor, x: Tensor) { return this.training.geluBackward(dy, x); }
  clampBackward(dy: Tensor, x: Tensor, limit: number) { return this.training.clampBackward(dy, x, limit); }
  embeddingBackwardInto(dst: Tensor, ids: Tensor, dy: Tensor, factor: number) { this.training.embeddingBackwardInto(dst, ids, dy, factor); }
  crossEntropyWithOutput(args: Parameters<CpuTrainingOps['crossEntropyWithOutput']>[0]) { return this.training.crossEntropyWithOutput(args); }
  addInto(dst: Tensor, src: Tensor, factor: number) { this.training.addInto(dst, src, factor); }
  scaleInPlace(dst: Tensor, factor: number) { this.training.scaleInPlace(dst, factor); }
  sumOfSquares(x: Tensor) { return this.training.sumOfSquares(x); }
  sumOfSquaresAll(xs: readonly Tensor[]) { return this.training.sumOfSquaresAll(xs); }
  adamwStep(args: Parameters<CpuTrainingOps['adamwStep']>[0]) { this.training.adamwStep(args); }
  adamwStepAll(args: Parameters<CpuTrainingOps['adamwStepAll']>[0]) { this.training.adamwStepAll(args); }
}

/** A small parameter (LayerNorm weight, bias) as float32, widening bfloat16 bits. */
function floats(t: Tensor): Float32Array {
  const c = asCpu(t);
  if (c.data instanceof Float32Array) return c.data;
  return rowOf(c, 0, c.data.length);
}

let warnedHeapFull = false;
function warnHeapFull(): void {
  if (warnedHeapFull) return;
  warnedHeapFull = true;
  process.emitWarning('mpt: the 4 GiB WebAssembly heap is full; further weights use the slower JS kernels (bfloat16 weights take half the room)');
}

/** The pool's work units per GELU: 8 keeps up to 8192 elements on one thread (see gelu()). */
const GELU_WORK_PER_ELEMENT = 8;

function rowOf(t: CpuTensor, row: number, d: number): Float32Array {
  if (t.data instanceof Uint16Array) {
    const out = new Float32Array(d);
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < d; i++) bits[i] = t.data[row * d + i] << 16;
    return out;
  }
  return (t.data as Float32Array).subarray(row * d, (row + 1) * d);
}

/** The buffers of the tensors in a scope's result (a tensor, or arrays, maps and plain objects of them). */
function reachableBuffers(result: unknown): Set<ArrayBufferLike> {
  const keep = new Set<ArrayBufferLike>();
  const visit = (v: unknown, depth: number): void => {
    if (depth > 6 || v === null || typeof v !== 'object') return;
    if (v instanceof CpuTensor) { keep.add(v.data.buffer); return; }
    if (Array.isArray(v)) { for (const x of v) visit(x, depth + 1); return; }
    if (v instanceof Map) { for (const x of v.values()) visit(x, depth + 1); return; }
    if (Object.getPrototypeOf(v) === Object.prototype) for (const x of Object.values(v)) visit(x, depth + 1);
  };
  visit(result, 0);
  return keep;
}
