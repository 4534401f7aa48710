/**
 * The Backend: device tensors and the primitive ops the MPT model is written against. The CPU backend
 * (src/backend/cpu) is the readable reference; the CUDA backend (src/backend/cuda) must agree with it.
 *
 * Conventions:
 * - A tensor's last dimension is its width; every op treats the leading dimensions as rows.
 * - Weights are [out, in] as in PyTorch: `linear` computes x · Wᵀ.
 * - Ops return new tensors in the backend's activation dtype (float32 on the CPU, bfloat16 or
 *   float32 on CUDA) and accumulate in float32 or wider.
 * - Ops are synchronous from the caller's view: the CPU backend blocks while its workers run; the
 *   CUDA backend enqueues on its stream and only `download` waits.
 */
import type { MptConfig } from '../model/config.js';
import type { MptParams } from '../model/params.js';

export type DType = 'float32' | 'bfloat16' | 'float16' | 'int32';

/** Host data for `upload`: Uint16Array carries the raw bits of bfloat16 or float16. */
export type HostArray = Float32Array | Int32Array | Uint16Array;

/** How a fused decoder picks tokens on the device: fixed for a run (temperature ≤ 0: greedy). */
export interface DeviceSampling {
  temperature: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

/** A fused decoder's refusal of a model it does not run: the generic forward serves it instead. */
export class DecoderUnsupported extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecoderUnsupported';
  }
}

/** A backend's fused generator over a preallocated KV cache of `batch` rows. */
export interface Decoder {
  /** Left-padded prompts [batch, t] (mask 1 real, 0 padding; null: all real) → the first new token of each row. */
  prefill(ids: Int32Array, mask: Int32Array | null, sampling: DeviceSampling): Int32Array;
  /** Feed the tokens chosen last and choose the next ones: one per row. */
  step(): Int32Array;
  release(): void;
}

export interface Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
}

export const elementCount = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
export const width = (t: Tensor): number => t.shape[t.shape.length - 1];
export const rowCount = (t: Tensor): number => elementCount(t.shape) / width(t);

export interface AttentionArgs {
  /** [batch, tq, nHeads·dHead]: the queries of the last tq positions. */
  q: Tensor;
  /**
   * [batch, capacity, nHeads·dHead] keys and values (a KV cache, or just this call's k and v);
   * rows [0, kvLen) are valid and the queries sit at positions kvLen - tq … kvLen - 1.
   */
  k: Tensor;
  v: Tensor;
  kvLen: number;
  nHeads: number;
  /** Multiplies q·kᵀ (1/sqrt(d_head) unless the config says otherwise). */
  scale: number;
  /** ALiBi: the score of query i on key j gets -(i - j)·slope[h]; null for no ALiBi. */
  alibiSlopes: Float32Array | null;
  /** [batch, capacity] int32: 1 for a real token, 0 for left padding; null when nothing is padded. */
  keyMask: Tensor | null;
}

export interface Backend {
  readonly name: 'cpu' | 'cuda';
  /** The dtype activations are computed and returned in. */
  readonly activationDType: DType;

  upload(data: HostArray, shape: readonly number[], dtype: DType): Tensor;
  /** Float tensors come back as float32, int32 tensors as int32. */
  download(t: Tensor): Float32Array | Int32Array;
  zeros(shape: readonly number[], dtype?: DType): Tensor;
  /** The same data seen with another shape of the same element count. */
  view(t: Tensor, shape: readonly number[]): Tensor;
  /**
   * Run `fn`; tensors allocated inside and not reachable from its result (a tensor, or an array or
   * plain object of tensors) are released when it returns. On the CPU this is the garbage collector's job.
   */
  scope<T>(fn: () => T): T;
  release(t: Tensor): void;

  /** ids int32 [n] → rows of table [vocab, d] → [n, d]. Out-of-range ids are an error. */
  embedding(ids: Tensor, table: Tensor): Tensor;
  add(a: Tensor, b: Tensor): Tensor;
  /** LayerNorm over the last dimension: (x - mean)/sqrt(var + eps)·weight + bias. */
  layerNorm(x: Tensor, weight: Tensor, bias: Tensor | null, eps: number): Tensor;
  /** x [.., in] · weightᵀ [out, in] + bias → [.., out]. */
  linear(x: Tensor, weight: Tensor, bias: Tensor | null): Tensor;
  /** Exact GELU: x·Φ(x) with the error function. */
  gelu(x: Tensor): Tensor;
  /** Clamp every element to [-limit, limit]. */
  clamp(x: Tensor, limit: number): Tensor;
  scale(x: Tensor, factor: number): Tensor;
  /** x[.., start : start + count] as a new contiguous tensor. */
  columns(x: Tensor, start: number, count: number): Tensor;
  /** Gather rows: x [n, d] → [indices.length, d]. */
  rows(x: Tensor, indices: readonly number[]): Tensor;
  /** dst [batch, capacity, w] rows [at, at + t) ← src [batch, t, w] (appending to a KV cache). */
  writeRows(dst: Tensor, src: Tensor, at: number): void;
  /** Causal multi-head attention → [batch, tq, nHeads·dHead]. */
  attention(args: AttentionArgs): Tensor;

  /**
   * Optional: a fused generation path for a whole model (CUDA: activations planned once, the decode
   * step captured as a graph, tokens chosen on the device). Backends without one generate through
   * the model's generic forward. Throws DecoderUnsupported, before allocating anything, for models
   * it does not run (the caller then uses the generic forward); any other error is a real failure.
   */
  createDecoder?(config: MptConfig, params: MptParams, slopes: Float32Array | null, batch: number, capacity: number): Decoder;
}

/**
 * Training: backward ops and optimizer ops (used by src/model/backward.ts and src/train). A separate
 * interface so a backend can run inference before it can train: `TrainingBackend` is a backend with
 * both, and `trainingBackend(be)` checks at run time. Gradients are float32 whatever the weights'
 * dtype; tensors given as `dst` are updated in place.
 */
export interface TrainingOps {

  /**
   * Attention for training: the queries are all the positions (tq = kvLen = capacity, no cache).
   * Returns the output and, per (batch, head, query), the log-sum-exp of its scaled, biased scores
   * [batch, nHeads, tq] float32, which is all `attentionBackward` needs to rebuild the softmax.
   */
  attentionForTraining(args: AttentionArgs): { out: Tensor; logSumExp: Tensor };
  /**
   * Gradients of `attentionForTraining` (flash-attention style: the probabilities are recomputed
   * from q, k and logSumExp, ALiBi inside the kernel; no [tq, kvLen] matrix needs to be kept).
   * dOut and out are [batch, tq, d]; returns dq, dk, dv of the same shape.
   */
  attentionBackward(args: AttentionArgs, out: Tensor, logSumExp: Tensor, dOut: Tensor): { dq: Tensor; dk: Tensor; dv: Tensor };
  /**
   * Gradients of `linear`, accumulating: dWeight += Σ_rows dyᵀ · x ([out, in]) and dBias += Σ_rows dy
   * ([out]) (float32, in place: the GEMM adds into the accumulator, no temporary), and dx = dy · W returned, or
   * added into `dxInto` (activation dtype, in place) when given — the sum over the three row blocks of
   * a fused QKV weight, for one.
   */
  linearBackwardInto(a: { dy: Tensor; x: Tensor; weight: Tensor; dWeight: Tensor; dBias: Tensor | null; dxInto?: Tensor | null }): Tensor;
  /**
   * Gradients of `layerNorm` (mean and variance recomputed from x): dWeight (+ dBias) += the parameter
   * gradients (float32, in place) and returns dx + `residual` (the gradient of the residual stream
   * around the norm, when given).
   */
  layerNormBackwardInto(a: { dy: Tensor; x: Tensor; weight: Tensor; eps: number; dWeight: Tensor; dBias: Tensor | null; residual?: Tensor | null }): Tensor;
  /** residual + x · weightᵀ (+ bias): a linear layer and the residual add around it in one op (forward). */
  linearResidual(x: Tensor, weight: Tensor, bias: Tensor | null, residual: Tensor): Tensor;
  /** Rows [start, start + count) of a tensor (along its first dimension) as a view sharing its storage. */
  rowBlock(t: Tensor, start: number, count: number): Tensor;
  /** dy · GELU'(x) for the exact GELU: Φ(x) + x·φ(x). */
  geluBackward(dy: Tensor, x: Tensor): Tensor;
  /** Gradient of `clamp`: dy where -limit ≤ x ≤ limit (as torch.clamp), 0 elsewhere. */
  clampBackward(dy: Tensor, x: Tensor, limit: number): Tensor;
  /** Gradient of `embedding`: dst[ids[i]] += factor · dy[i] for every row i (dst [vocab, d] float32, in place). */
  embeddingBackwardInto(dst: Tensor, ids: Tensor, dy: Tensor, factor: number): void;
  /**
   * The output layer fused with cross entropy: logits = x · tableᵀ (· logitScale), never held for
   * all rows at once. targets int32 [n], -1 = ignored. Returns the summed loss over counted rows
   * ([1] float32) and their count; with `gradients`, also dx [n, d] and dTable [vocab, d] of
   * `lossScale · Σ loss` (pass 1/count for the mean). Losses are computed in float32 or wider.
   */
  crossEntropyWithOutput(args: {
    x: Tensor; table: Tensor; targets: Tensor; logitScale: number | null; lossScale: number; gradients: boolean;
    /** float32 [vocab, d]: with gradients, dTable is added into it (in place) and returned as dTable. */
    dTableInto?: Tensor | null;
  }): { lossSum: Tensor; count: number; dx: Tensor | null; dTable: Tensor | null };
  /** dst += factor · src, elementwise (dst float32, in place): gradient accumulation. */
  addInto(dst: Tensor, src: Tensor, factor: number): void;
  /** dst ← factor · dst, in place (clipping gradients). */
  scaleInPlace(dst: Tensor, factor: number): void;
  /** Σ x² of a float tensor, accumulated in float64, as a host number (the global gradient norm). */
  sumOfSquares(x: Tensor): number;
  /**
   * Σ x² over all the tensors, accumulated in float64: the same number as summing `sumOfSquares` over
   * them, with one device round trip instead of one a tensor (a model has hundreds of gradients).
   */
  sumOfSquaresAll(xs: readonly Tensor[]): number;
  /**
   * One AdamW step on a float32 master parameter and its float32 moments, in place, as torch:
   *   param ← param · (1 - decay);  m ← β1·m + (1-β1)·g;  v ← β2·v + (1-β2)·g²
   *   param ← param - lr/(1-β1^step) · m / (sqrt(v)/sqrt(1-β2^step) + eps)
   * `decay` is lr·weight_decay for torch's AdamW and weight_decay·lr/initial_lr for Composer's
   * decoupled AdamW; the caller decides. With `computeCopy` (bf16 compute weights), that tensor is
   * refreshed from the new master values, rounded to its dtype.
   */
  adamwStep(args: {
    param: Tensor; grad: Tensor; m: Tensor; v: Tensor; lr: number; beta1: number; beta2: number; eps: number;
    decay: number; step: number; computeCopy?: Tensor | null;
  }): void;
  /**
   * `adamwStep` on every parameter of `tensors` with one set of hyperparameters: the same values as
   * one adamwStep each (CUDA: one launch for all of them instead of one a parameter).
   */
  adamwStepAll(args: { tensors: readonly AdamwTensors[]; lr: number; beta1: number; beta2: number; eps: number; decay: number; step: number }): void;
}

/** One parameter's AdamW operands: the float32 master, its gradient and moments, and the optional compute copy. */
export interface AdamwTensors { param: Tensor; grad: Tensor; m: Tensor; v: Tensor; computeCopy?: Tensor | null }

export type TrainingBackend = Backend & TrainingOps;

const TRAINING_OPS: ReadonlyArray<keyof TrainingOps> = [
  'attentionForTraining', 'attentionBackward', 'geluBackward', 'clampBackward',
  'linearBackwardInto', 'layerNormBackwardInto', 'linearResidual', 'rowBlock',
  'embeddingBackwardInto', 'crossEntropyWithOutput', 'addInto', 'scaleInPlace', 'sumOfSquares', 'sumOfSquaresAll', 'adamwStep', 'adamwStepAll',
];

/** The backend as a TrainingBackend, or an error naming the ops it lacks. */
export function trainingBackend(be: Backend): TrainingBackend {
  const missing = TRAINING_OPS.filter((op) => typeof (be as unknown as Record<string, unknown>)[op] !== 'function');
  if (missing.length > 0) throw new Error(`the ${be.name} backend cannot train yet: it lacks ${missing.join(', ')}`);
  return be as TrainingBackend;
}

/** A float32 or float64 value at a byte offset of a device tensor: a step's result left on the device. */
export interface DeviceScalar { tensor: Tensor; offset: number; type: 'float32' | 'float64' }

/**
 * What a backend may offer beyond TrainingBackend so that a training step never waits for the device
 * (CUDA: `backend.training`, src/backend/cuda/training.ts; src/train/step.ts uses them): the host
 * stays ahead, queueing the next work while the device runs, and reads the step's results (loss,
 * gradient norm) once per log interval. Without it (the CPU) every step returns host numbers as before.
 */
export interface WaitFreeTrainingOps {
  /** int32 host values → a new device tensor, in stream order without waiting for the device. */
  uploadAsync(data: Int32Array, shape: readonly number[]): Tensor;
  /**
   * crossEntropyWithOutput taking the targets' host copy, so that it need not download them;
   * `overwriteDTable`: dTableInto holds stale values and is written, not added to.
   */
  crossEntropyWithOutput(args: Parameters<TrainingBackend['crossEntropyWithOutput']>[0] & { hostTargets: Int32Array; overwriteDTable: boolean }):
    ReturnType<TrainingBackend['crossEntropyWithOutput']>;
  /** linearBackwardInto; `overwriteDWeight`: dWeight holds stale values and gets dyᵀ·x written, not added (no zeroing first). */
  linearBackwardInto(a: Parameters<TrainingBackend['linearBackwardInto']>[0] & { overwriteDWeight: boolean }): Tensor;
  /** Set to zero in place (gradients kept from step to step). */
  zeroInPlace(ts: readonly Tensor[]): void;
  /** The global gradient norm (float64) and the clipping factor min(1, maxNorm/(norm + 1e-6)) (float32), on the device. */
  gradNormOnDevice(grads: readonly Tensor[], maxNorm: number | null): { norm: DeviceScalar; factor: DeviceScalar };
  /** adamwStepAll with every gradient multiplied by gradScale (a device float32) as it is read. */
  adamwStepAll(args: Parameters<TrainingBackend['adamwStepAll']>[0] & { gradScale: DeviceScalar | null }): void;
  /** Copy the values to the host in stream order without waiting; settle() returns them. */
  stage(values: readonly DeviceScalar[]): void;
  /** The values staged since the last call, in order, after one wait for the device. */
  settle(): number[];
}

/** The backend's wait-free training ops, or null when it has none (or they are switched off for a comparison). */
export function waitFreeOps(backend: Backend): WaitFreeTrainingOps | null {
  const ops = (backend as { training?: Partial<WaitFreeTrainingOps> & { waitFree?: boolean } }).training;
  if (!ops || ops.waitFree !== true) return null;
  const needed: Array<keyof WaitFreeTrainingOps> = ['uploadAsync', 'crossEntropyWithOutput', 'linearBackwardInto', 'zeroInPlace', 'gradNormOnDevice', 'adamwStepAll', 'stage', 'settle'];
  return needed.every((name) => typeof ops[name] === 'function') ? (ops as WaitFreeTrainingOps) : null;
}

/**
 * An op beyond the Backend interface: x·W_iᵀ (+ b_i) for each of `parts` equal row blocks W_i of
 * `weight` (and of `bias`), each output its own contiguous tensor [rows, outF / parts] — the same values
 * as `parts` calls of linear on rowBlock views. The CUDA backend's training ops have it (one
 * strided-batched GEMM, the outputs slices of one block); TrainingGraph.qkv uses it.
 */
export interface RowBlockLinear {
  linearRowBlocks(x: Tensor, weight: Tensor, bias: Tensor | null, parts: number): Tensor[];
}

/**
 * Columns [column, column + n) of every row of a row-major [rows, width] tensor: where an op writes an
 * output of n columns in place, its rows `width` values apart (width a multiple of n).
 */
export interface ColumnBlock { tensor: Tensor; column: number }

/**
 * Ops beyond the Backend interface that write an output into a column block of a wider tensor (the CUDA
 * backend's training ops): the backward of Wqkv gets dq, dk and dv side by side in one [rows, 3·d]
 * gradient, so that dLn1Out = dQKV·Wqkv and Wqkv's gradient dQKVᵀ·LN_1(x) are one GEMM each over the
 * fused weight (linearBackwardInto) instead of three over its row blocks. The values written are the
 * ones the ops give as tensors of their own, bit for bit.
 */
export interface ColumnBlockOutputs {
  /** An uninitialized [rows, width] tensor in the activation dtype (current scope), for outputs written in column blocks. */
  columnBlocks(rows: number, width: number): Tensor;
  /** attentionBackward with dk and/or dv written into the given column blocks (null comes back for those) instead of tensors of their own. */
  attentionBackward(args: AttentionArgs, out: Tensor, logSumExp: Tensor, dOut: Tensor, into: { dk?: ColumnBlock | null; dv?: ColumnBlock | null } | null):
    { dq: Tensor; dk: Tensor | null; dv: Tensor | null };
  /**
   * layerNormBackwardInto with dx written into the column block `dxColumns` (no residual); returns that
   * block's tensor. (Not linearBackwardInto's dxInto, a tensor dx is added into.)
   */
  layerNormBackwardInto(a: Parameters<TrainingBackend['layerNormBackwardInto']>[0] & { dxColumns: ColumnBlock }): Tensor;
}

/** The backend's training ops as `T` (an interface beyond Backend) when they have its `method`, else null. */
export function trainingOpsWith<T>(backend: Backend, method: keyof T & string): T | null {
  const ops = (backend as { training?: Record<string, unknown> }).training;
  return ops && typeof ops[method] === 'function' ? (ops as T) : null;
}
