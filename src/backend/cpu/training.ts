import type { AdamwTensors, AttentionArgs, Tensor } from '../backend.js';
import { rowCount, width } from '../backend.js';
import { adamwStep, refreshCopy } from './backward/adamw.js';
import { attentionBackward, attentionForward, type TrainingAttentionProblem } from './backward/attention.js';
import { crossEntropyWithOutput } from './backward/cross-entropy.js';
import { clampBackward, geluBackward } from './backward/elementwise.js';
import { linearBackward } from './backward/linear.js';
import { widen } from './backward/matmul.js';
import { layerNormBackward } from './backward/norm.js';
import type { CpuPool } from './pool.js';
import { allocate, asCpu, CpuTensor } from './tensor.js';

/**
 * The CPU backend's training ops (the Backend interface documents each one): thin wrappers that
 * check shapes and hand flat arrays to the kernels in ./backward. Gradients are float32.
 */
export class CpuTrainingOps {
  constructor(private readonly pool: CpuPool) {}

  attentionForTraining(args: AttentionArgs): { out: CpuTensor; logSumExp: CpuTensor } {
    const p = problem(args);
    const { out, logSumExp } = attentionForward(p);
    return { out: wrap(args.q.shape, out), logSumExp: wrap([p.batch, p.nHeads, p.t], logSumExp) };
  }

  attentionBackward(args: AttentionArgs, out: Tensor, logSumExp: Tensor, dOut: Tensor): { dq: CpuTensor; dk: CpuTensor; dv: CpuTensor } {
    const g = attentionBackward(problem(args), f32(out), f32(logSumExp), f32(dOut));
    return { dq: wrap(args.q.shape, g.dq), dk: wrap(args.q.shape, g.dk), dv: wrap(args.q.shape, g.dv) };
  }

  /** The gradients of `linear` as new tensors (linearBackwardInto adds them where they go). */
  private linearBackward(dy: Tensor, x: Tensor, weight: Tensor, withBias: boolean): { dx: CpuTensor; dWeight: CpuTensor; dBias: CpuTensor | null } {
    const [outWidth, inWidth] = weight.shape;
    if (width(x) !== inWidth || width(dy) !== outWidth || rowCount(x) !== rowCount(dy)) {
      throw new Error(`linearBackward: dy [${dy.shape}], x [${x.shape}] and weight [${weight.shape}] disagree`);
    }
    const g = linearBackward(this.pool, f32(dy), f32(x), weightData(weight), rowCount(x), inWidth, outWidth, withBias);
    return { dx: wrap(x.shape, g.dx), dWeight: wrap(weight.shape, g.dWeight), dBias: g.dBias ? wrap([outWidth], g.dBias) : null };
  }

  /** The gradients of `layerNorm` as new tensors (layerNormBackwardInto adds them where they go). */
  private layerNormBackward(dy: Tensor, x: Tensor, weight: Tensor, eps: number, withBias: boolean): { dx: CpuTensor; dWeight: CpuTensor; dBias: CpuTensor | null } {
    const n = width(x);
    const g = layerNormBackward(f32(dy), f32(x), widen(weightData(weight)), rowCount(x), n, eps, withBias);
    return { dx: wrap(x.shape, g.dx), dWeight: wrap([n], g.dWeight), dBias: g.dBias ? wrap([n], g.dBias) : null };
  }

  linearBackwardInto(a: { dy: Tensor; x: Tensor; weight: Tensor; dWeight: Tensor; dBias: Tensor | null; dxInto?: Tensor | null }): CpuTensor {
    const g = this.linearBackward(a.dy, a.x, a.weight, a.dBias !== null);
    this.addInto(a.dWeight, g.dWeight, 1);
    if (a.dBias) this.addInto(a.dBias, g.dBias!, 1);
    if (!a.dxInto) return g.dx;
    this.addInto(a.dxInto, g.dx, 1);
    return asCpu(a.dxInto);
  }

  layerNormBackwardInto(a: { dy: Tensor; x: Tensor; weight: Tensor; eps: number; dWeight: Tensor; dBias: Tensor | null; residual?: Tensor | null }): CpuTensor {
    const g = this.layerNormBackward(a.dy, a.x, a.weight, a.eps, a.dBias !== null);
    this.addInto(a.dWeight, g.dWeight, 1);
    if (a.dBias) this.addInto(a.dBias, g.dBias!, 1);
    if (a.residual) this.addInto(g.dx, a.residual, 1);
    return g.dx;
  }

  /** Rows of a float or int tensor along its first dimension, sharing its (shared) memory. */
  rowBlock(t: Tensor, start: number, count: number): CpuTensor {
    const c = asCpu(t), rows = c.shape[0], per = c.data.length / Math.max(rows, 1);
    if (c.shape.length < 1 || !Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > rows) {
      throw new Error(`rowBlock: rows [${start}, ${start + count}) of a tensor [${c.shape}]`);
    }
    return new CpuTensor([count, ...c.shape.slice(1)], c.dtype, c.data.subarray(start * per, (start + count) * per));
  }

  geluBackward(dy: Tensor, x: Tensor): CpuTensor {
    return wrap(x.shape, geluBackward(f32(dy), f32(x)));
  }

  clampBackward(dy: Tensor, x: Tensor, limit: number): CpuTensor {
    return wrap(x.shape, clampBackward(f32(dy), f32(x), limit));
  }

  embeddingBackwardInto(dst: Tensor, ids: Tensor, dy: Tensor, factor: number): void {
    const [vocab, d] = dst.shape;
    const idData = asCpu(ids).data as Int32Array, g = f32(dy), out = f32(dst);
    if (width(dy) !== d || rowCount(dy) !== idData.length) throw new Error(`embeddingBackwardInto: dy [${dy.shape}] for ${idData.length} ids into [${dst.shape}]`);
    for (let i = 0; i < idData.length; i++) {
      const id = idData[i];
      if (!(id >= 0 && id < vocab)) throw new RangeError(`embedding gradient: token id ${id} outside the vocabulary of ${vocab}`);
      for (let e = 0; e < d; e++) out[id * d + e] += factor * g[i * d + e];
    }
  }

  /** `logitType` (beyond the Backend interface): 'bfloat16' is the CUDA bf16 path's math (cross-entropy.ts), for its tests. */
  crossEntropyWithOutput(args: { x: Tensor; table: Tensor; targets: Tensor; logitScale: number | null; lossScale: number; gradients: boolean; dTableInto?: Tensor | null; logitType?: 'float32' | 'bfloat16' }):
    { lossSum: CpuTensor; count: number; dx: CpuTensor | null; dTable: CpuTensor | null } {
    const [vocab, d] = args.table.shape;
    const n = rowCount(args.x);
    if (width(args.x) !== d) throw new Error(`crossEntropyWithOutput: x [${args.x.shape}] against table [${args.table.shape}]`);
    const targets = asCpu(args.targets).data as Int32Array;
    if (targets.length !== n) throw new Error(`crossEntropyWithOutput: ${targets.length} targets for ${n} rows`);
    const r = crossEntropyWithOutput(this.pool, f32(args.x), weightData(args.table), targets, n, d, vocab, args.logitScale ?? 1, args.lossScale, args.gradients, args.logitType);
    let dTable = r.dTable ? wrap([vocab, d], r.dTable) : null;
    if (dTable && args.dTableInto) {
      this.addInto(args.dTableInto, dTable, 1);
      dTable = asCpu(args.dTableInto);
    }
    return { lossSum: wrap([1], Float32Array.of(r.lossSum)), count: r.count, dx: r.dx ? wrap([n, d], r.dx) : null, dTable };
  }

  addInto(dst: Tensor, src: Tensor, factor: number): void {
    const d = f32(dst), s = f32(src);
    if (d.length !== s.length) throw new Error(`addInto: [${src.shape}] into [${dst.shape}]`);
    if (factor === 1) for (let i = 0; i < d.length; i++) d[i] += s[i];
    else for (let i = 0; i < d.length; i++) d[i] += factor * s[i];
  }

  scaleInPlace(dst: Tensor, factor: number): void {
    const d = f32(dst);
    for (let i = 0; i < d.length; i++) d[i] *= factor;
  }

  sumOfSquares(x: Tensor): number {
    const d = widen(weightData(x));
    let sum = 0;
    for (let i = 0; i < d.length; i++) sum += d[i] * d[i];
    return sum;
  }

  sumOfSquaresAll(xs: readonly Tensor[]): number {
    return xs.reduce((sum, x) => sum + this.sumOfSquares(x), 0);
  }

  adamwStep(a: { param: Tensor; grad: Tensor; m: Tensor; v: Tensor; lr: number; beta1: number; beta2: number; eps: number; decay: number; step: number; computeCopy?: Tensor | null }): void {
    const param = f32(a.param);
    for (const [name, t] of [['grad', a.grad], ['m', a.m], ['v', a.v]] as const) {
      if (f32(t).length !== param.length) throw new Error(`adamwStep: ${name} [${t.shape}] for a parameter [${a.param.shape}]`);
    }
    adamwStep(param, f32(a.grad), f32(a.m), f32(a.v), a.lr, a.beta1, a.beta2, a.eps, a.decay, a.step);
    if (a.computeCopy) refreshCopy(param, asCpu(a.computeCopy).data as Float32Array | Uint16Array);
  }

  adamwStepAll(a: { tensors: readonly AdamwTensors[]; lr: number; beta1: number; beta2: number; eps: number; decay: number; step: number }): void {
    const { tensors, ...hyper } = a;
    for (const t of tensors) this.adamwStep({ ...t, ...hyper });
  }
}

function problem(args: AttentionArgs): TrainingAttentionProblem {
  const [batch, t, d] = args.q.shape;
  if (args.kvLen !== t || args.k.shape[1] !== t) throw new Error(`attention for training needs queries = keys: tq ${t}, kvLen ${args.kvLen}, capacity ${args.k.shape[1]}`);
  return {
    q: f32(args.q), k: f32(args.k), v: f32(args.v), keyMask: args.keyMask ? (asCpu(args.keyMask).data as Int32Array) : null,
    batch, t, nHeads: args.nHeads, dHead: d / args.nHeads, scale: args.scale, slopes: args.alibiSlopes,
  };
}

const f32 = (t: Tensor): Float32Array => asCpu(t).f32;

function weightData(t: Tensor): Float32Array | Uint16Array {
  const data = asCpu(t).data;
  if (data instanceof Int32Array) throw new Error('expected a float tensor, got int32');
  return data;
}

/** A float32 result as a tensor (copied into shared memory, where every CPU tensor lives). */
function wrap(shape: readonly number[], data: Float32Array): CpuTensor {
  if (data.buffer instanceof SharedArrayBuffer) return new CpuTensor(shape, 'float32', data);
  const t = allocate(shape, 'float32');
  t.f32.set(data);
  return t;
}
