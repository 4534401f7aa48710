/**
 * The CUDA backend's training ops (the Backend interface documents each one). Kernels:
 * kernels/flash_attention.cu (attention forward with its log-sum-exp, launched through flash.ts), kernels/flash_backward.cu,
 * kernels/layernorm_backward.cu, kernels/cross_entropy.cu, kernels/adamw.cu and
 * kernels/train_elementwise.cu; GEMMs through cuBLASLt (training-gemm.ts).
 *
 * Dtypes: activation gradients (dx, dq, …) come back in the backend's activation dtype (bf16 under
 * amp_bf16, as autocast's backward gives them), parameter gradients (dWeight, dBias, dTable) and every
 * accumulator in float32. Inputs in another float dtype are converted to the activation dtype first.
 * This is the generic path: each op allocates its outputs through the caching allocator.
 */
import {
  elementCount, rowCount, width, type AdamwTensors, type AttentionArgs, type ColumnBlock, type ColumnBlockOutputs, type DeviceScalar, type RowBlockLinear, type Tensor,
  type WaitFreeTrainingOps,
} from '../backend.js';
import { UserError } from '../../util/errors.js';
import { KERNEL_ARGS } from './kernels.js';
import {
  dkdvStrideDefines, FLASH_BACKWARD_CHUNK_DEFAULT, FLASH_BACKWARD_STORED_DS, FLASH_TRAIN_SHAPE, flashBackwardScratchElements, launchFlashBackward, launchFlashForward, launchRowDot,
  type FlashForwardShape,
} from './flash.js';
import { TrainingGemm, type GemmType } from './training-gemm.js';
import { asCuda, bytesPer, CudaTensor } from './tensor.js';
import { CudaEvent, PinnedBuffer } from './driver.js';
import type { CudaBackend } from './index.js';
import { MultiTensorTables } from './multi-tensor.js';
import { buildGeluTable, launchGeluTable } from './gelu-table.js';

Object.assign(KERNEL_ARGS, {
  gelu_backward: 'pppq', clamp_backward: 'pppfq', add_into: 'ppfq', scale_in_place: 'pfq',
  sum_squares_partial: 'pqp', sum_doubles: 'pip', sum_floats: 'pip', embedding_backward: 'pppiiifp', column_sums: 'ppii',
  adamw_step: 'ppppffffffqpp', adamw_multi: 'ppffffffp', grad_clip_factor: 'pdpp', sum_squares_multi: 'ppip', layernorm_backward: 'ppppppiif', layernorm_backward_teams: 'ppppppiif', layernorm_backward_ring: 'ppppppiif', layernorm_dw_sum: 'piipp',
  gelu_backward8: 'pppq', gelu_backward_table8: 'pppqp', gelu_slope_table_build: 'p', sum_squares_partial4: 'pqp', cross_entropy_rows: 'ppppifi', cross_entropy_rows_smem: 'ppppifi',
  attention_forward_scalar: 'pppppppiiif',
  attention_backward_dq_scalar: 'pppppppppiiif', attention_backward_dkdv_scalar: 'ppppppppppiiif',
});

const REDUCE_BLOCKS = 264;



/** A launch of a LayerNorm-backward row kernel: team threads, teams a block, blocks an SM, dynamic shared memory, its own defines. */
type LnShape = { team: number; teams: number; minBlocks: number; sharedBytes: number; defs: Record<string, number | boolean> };

/**
 * Both LayerNorm-backward row kernels' layout: a team of at most teamMax threads a row (whole warps), as
 * many teams a block as blockThreads allows (at most 8), and the blocks an SM that threadsPerSM allows; a
 * thread of several chunks holds several times the registers, so fewer threads a block and an SM.
 */
function teamLayout(c: { teamMax: number; blockThreads: number; threadsPerSM: number }, n: number, perThread: number): { team: number; teams: number; minBlocks: number } {
  const team = Math.min(c.teamMax, Math.ceil(n / 8 / perThread / 32) * 32);
  const teams = Math.max(1, Math.min(8, Math.floor(c.blockThreads / perThread / team)));
  return { team, teams, minBlocks: Math.max(1, Math.floor(c.threadsPerSM / perThread / (team * teams))) };
}

/** `shape` with the fields $MPT_CUDA_LN_RING names (name=integer, comma-separated) replaced. */
function lnRingShape<S extends Record<string, number>>(shape: S): S {
  const v = process.env.MPT_CUDA_LN_RING ?? '';
  for (const item of v.split(',').map((x) => x.trim()).filter((x) => x !== '')) {
    const [key, value] = item.split('=');
    if (!(key in shape) || !/^[1-9][0-9]*$/.test(value ?? '')) throw new UserError(`MPT_CUDA_LN_RING: '${item}' is not name=integer with a name among ${Object.keys(shape).join(', ')}`);
    (shape as Record<string, number>)[key] = Number(value);
  }
  return shape;
}

/** $MPT_CUDA_LN_BWD: 'teams' for the LayerNorm backward with rows in registers, else 'ring' (rows through shared memory). */
function lnKernelDefault(): 'ring' | 'teams' {
  const v = process.env.MPT_CUDA_LN_BWD ?? '';
  if (v !== '' && v !== 'ring' && v !== 'teams') throw new UserError(`MPT_CUDA_LN_BWD: '${v}' is not a LayerNorm backward kernel (teams, ring)`);
  return v === 'teams' ? 'teams' : 'ring';
}

/** Pinned staging buffers uploadAsync cycles through (each reused once the copy out of it has completed). */
const STAGING_SLOTS = 8;
/** Values a pinned chunk of stage() holds (8 bytes each). */
const STAGED_PER_CHUNK = 512;

export class CudaTrainingOps implements WaitFreeTrainingOps, ColumnBlockOutputs, RowBlockLinear {
  readonly gemm: TrainingGemm;
  private scratch: CudaTensor | null = null;
  /** The tensor-core attention kernels' compile-time shapes (flash.ts; benchmarks compare others). */
  flashShape: FlashForwardShape = FLASH_TRAIN_SHAPE;
  flashBackwardChunk = FLASH_BACKWARD_CHUNK_DEFAULT;
  /** dq from the dsᵀ that dk/dv store (a transient bf16 scratch) instead of recomputing S and dP. */
  flashBackwardStoredDs = FLASH_BACKWARD_STORED_DS;
  /** Logit elements of one cross-entropy block: 256 Mi (512 MiB of bf16, 1 GiB of float32); tests lower it to get several blocks. */
  logitBlockElements = 1 << 28;
  /** cross_entropy_rows_smem (the row read once, held in shared memory) where the vocabulary allows; false: the two-pass kernel (tests). */
  crossEntropyRowInShared = true;

  /**
   * Whether the model and the training loop take the wait-free path (src/backend/backend.ts
   * `waitFreeOps`): uploads through pinned memory, the targets checked on the host, the loss and the
   * gradient norm left on the device, clipping folded into AdamW. false: the path that reads the loss
   * and the norm back every step (comparisons; MPT_TRAIN_WAIT_FREE=0).
   */
  waitFree = process.env.MPT_TRAIN_WAIT_FREE !== '0';

  constructor(private readonly be: CudaBackend) {
    this.gemm = new TrainingGemm(be.ctx);
    this.squaresTables = new MultiTensorTables(be, 65536, (dst, data) => this.copyInStaged(dst, data));
    this.adamwTables = new MultiTensorTables(be, 4096, (dst, data) => be.ctx.copyInAsync(dst, data));
  }

  private get act() { return this.be.activationDType; }
  private defsFor(dtype: string, extra: Record<string, string | number | boolean> = {}) {
    return { MPT_BF16: dtype === 'bfloat16', ...extra };
  }
  /** A float tensor in the activation dtype (converted into the current scope when it is not). */
  private inAct(t: Tensor, what: string): CudaTensor {
    const c = asCuda(t, what);
    if (c.dtype === this.act) return c;
    if (c.dtype === 'int32') throw new Error(`${what}: an int32 tensor where ${this.act} values are expected`);
    const n = elementCount(c.shape), out = this.be.alloc(c.shape);
    const kernel = c.dtype === 'float32' ? 'f32_to_t' : 'bf16_to_t';
    this.be.launch1d('elementwise.cu', kernel, n, [c.ptr, out.ptr, n]);
    return out;
  }
  private f32(t: Tensor, what: string): CudaTensor {
    const c = asCuda(t, what);
    if (c.dtype !== 'float32') throw new Error(`${what}: expected a float32 tensor, got ${c.dtype}`);
    return c;
  }
  private floatSource(t: Tensor, what: string): CudaTensor {
    const c = asCuda(t, what);
    if (c.dtype !== 'float32' && c.dtype !== 'bfloat16') throw new Error(`${what}: expected a float tensor, got ${c.dtype}`);
    return c;
  }
  /** A float64 scratch buffer of at least `count` values for reductions (kept for the backend's life, grown when needed). */
  private doubles(count = REDUCE_BLOCKS + 1): CudaTensor {
    if (this.scratch && elementCount(this.scratch.shape) < 2 * count) {
      this.be.release(this.scratch);
      this.scratch = null;
    }
    if (!this.scratch) this.scratch = this.be.persistent([2 * count], 'float32');
    return this.scratch;
  }

  // ---- attention ------------------------------------------------------------------------------

  private attentionShape(args: AttentionArgs) {
    const [batch, t, d] = args.q.shape;
    if (args.q.shape.length !== 3 || args.kvLen !== t || args.k.shape[1] !== t || args.v.shape[1] !== t) {
      throw new Error(`attention for training needs queries = keys: q [${args.q.shape}], k [${args.k.shape}], kvLen ${args.kvLen}`);
    }
    const dHead = d / args.nHeads;
    if (!Number.isInteger(dHead) || dHead > 256) throw new Error(`attention for training: width ${d} over ${args.nHeads} heads (head size at most 256)`);
    const fast = this.act === 'bfloat16' && dHead % 16 === 0 && dHead <= 128 && !args.keyMask;
    return { batch, t, d, dHead, fast };
  }

  attentionForTraining(args: AttentionArgs): { out: Tensor; logSumExp: Tensor } {
    const be = this.be, { batch, t, d, dHead, fast } = this.attentionShape(args);
    const q = this.inAct(args.q, 'attention q'), k = this.inAct(args.k, 'attention k'), v = this.inAct(args.v, 'attention v');
    const slopes = args.alibiSlopes ? be.slopesOnDevice(args.alibiSlopes).ptr : 0;
    const mask = args.keyMask ? asCuda(args.keyMask, 'attention keyMask').ptr : 0;
    const out = be.alloc([batch, t, d]);
    const lse = be.alloc([batch, args.nHeads, t], 'float32');
    if (fast) {
      launchFlashForward(be.kernels, {
        q: q.ptr, k: k.ptr, v: v.ptr, mask: 0, slopes, out: out.ptr, lse: lse.ptr, batch, nHeads: args.nHeads, dHead,
        tq: t, capacity: t, kvLen: t, qStride: d, kvStride: d, oStride: d, scale: args.scale,
      }, this.flashShape);
    } else {
      be.kernels.get('flash_attention.cu', 'attention_forward_scalar', be.defs()).launch([Math.ceil(t / 4), args.nHeads, batch], [128],
        [q.ptr, k.ptr, v.ptr, mask, slopes, out.ptr, lse.ptr, t, args.nHeads, dHead, args.scale]);
    }
    return { out, logSumExp: lse };
  }

  // ---- outputs written into column blocks of a wider tensor (backend.ts ColumnBlockOutputs) --

  /** An uninitialized [rows, width] tensor in the activation dtype, for outputs written in column blocks. */
  columnBlocks(rows: number, width: number): Tensor {
    return this.be.alloc([rows, width]);
  }

  /**
   * Where an output of `rows` × `n` lands in the column block b: its device address, and the row stride in
   * rows of n (`widths`, the kernels' DKDV_*_WIDTHS / LN_DX_WIDTHS) — checked: a 2-D tensor in the
   * activation dtype, `rows` rows, a width that is a multiple of n, the block inside it.
   */
  private columnBlock(b: ColumnBlock, rows: number, n: number, what: string): { ptr: number; widths: number } {
    const c = asCuda(b.tensor, what), total = width(c);
    if (c.dtype !== this.act || c.shape.length !== 2 || rowCount(c) !== rows || n <= 0 || total % n !== 0
      || !Number.isInteger(b.column) || b.column < 0 || b.column + n > total) {
      throw new Error(`${what}: columns [${b.column}, ${b.column + n}) of a ${c.dtype} tensor [${c.shape}] for ${rows} rows of ${n} ${this.act} values`);
    }
    return { ptr: c.ptr + b.column * bytesPer(c.dtype), widths: total / n };
  }

  /**
   * dq, dk and dv of attention; `into` (ColumnBlockOutputs): dk and/or dv written into column blocks of
   * wider tensors instead (null comes back for those), by the same kernels with the output row stride as
   * a define (absent for contiguous outputs: the default kernels).
   */
  attentionBackward(args: AttentionArgs, out: Tensor, logSumExp: Tensor, dOut: Tensor): { dq: Tensor; dk: Tensor; dv: Tensor };
  attentionBackward(args: AttentionArgs, out: Tensor, logSumExp: Tensor, dOut: Tensor, into: { dk?: ColumnBlock | null; dv?: ColumnBlock | null } | null):
    { dq: Tensor; dk: Tensor | null; dv: Tensor | null };
  attentionBackward(args: AttentionArgs, out: Tensor, logSumExp: Tensor, dOut: Tensor, into: { dk?: ColumnBlock | null; dv?: ColumnBlock | null } | null = null):
    { dq: Tensor; dk: Tensor | null; dv: Tensor | null } {
    const be = this.be, { batch, t, d, dHead, fast } = this.attentionShape(args);
    const q = this.inAct(args.q, 'attention q'), k = this.inAct(args.k, 'attention k'), v = this.inAct(args.v, 'attention v');
    const o = this.inAct(out, 'attentionBackward out'), g = this.inAct(dOut, 'attentionBackward dOut');
    const lse = this.f32(logSumExp, 'attentionBackward logSumExp');
    const slopes = args.alibiSlopes ? be.slopesOnDevice(args.alibiSlopes).ptr : 0;
    const mask = args.keyMask ? asCuda(args.keyMask, 'attention keyMask').ptr : 0;
    const D = be.alloc([batch, args.nHeads, t], 'float32');
    launchRowDot(be.kernels, be.activationDType === 'bfloat16', { dOut: g.ptr, out: o.ptr, D: D.ptr, batch, t, nHeads: args.nHeads, dHead });
    const dkInto = into?.dk ? this.columnBlock(into.dk, batch * t, d, 'attentionBackward dk') : null;
    const dvInto = into?.dv ? this.columnBlock(into.dv, batch * t, d, 'attentionBackward dv') : null;
    if (fast && [dkInto, dvInto].some((b) => b && b.ptr % 4 !== 0)) throw new Error('attentionBackward: a column block at an odd column (the kernels store bf16 pairs)');
    const dq = be.alloc([batch, t, d]), dk = dkInto ? null : be.alloc([batch, t, d]), dv = dvInto ? null : be.alloc([batch, t, d]);
    const dkPtr = dkInto?.ptr ?? dk!.ptr, dvPtr = dvInto?.ptr ?? dv!.ptr;
    if (fast) {
      // dsᵀ scratch (flash.ts) for this call only: released as soon as dq is queued, so the next layer's
      // backward reuses the same block.
      const ds = this.flashBackwardStoredDs ? be.alloc([flashBackwardScratchElements(batch, args.nHeads, t)], 'bfloat16') : null;
      launchFlashBackward(be.kernels, {
        q: q.ptr, k: k.ptr, v: v.ptr, dOut: g.ptr, lse: lse.ptr, D: D.ptr, slopes, dq: dq.ptr, dk: dkPtr, dv: dvPtr,
        batch, t, nHeads: args.nHeads, dHead, scale: args.scale, ds: ds?.ptr ?? 0, dkWidths: dkInto?.widths, dvWidths: dvInto?.widths,
      }, this.flashBackwardChunk);
      if (ds) be.release(ds);
    } else {
      const sgrid = [Math.ceil(t / 4), args.nHeads, batch];
      be.kernels.get('flash_backward.cu', 'attention_backward_dq_scalar', be.defs()).launch(sgrid, [128],
        [q.ptr, k.ptr, v.ptr, g.ptr, lse.ptr, D.ptr, mask, slopes, dq.ptr, t, args.nHeads, dHead, args.scale]);
      const strides = dkdvStrideDefines({ dkWidths: dkInto?.widths, dvWidths: dvInto?.widths });
      be.kernels.get('flash_backward.cu', 'attention_backward_dkdv_scalar', be.defs(strides)).launch(sgrid, [128],
        [q.ptr, k.ptr, v.ptr, g.ptr, lse.ptr, D.ptr, mask, slopes, dkPtr, dvPtr, t, args.nHeads, dHead, args.scale]);
    }
    return { dq, dk, dv };
  }

  // ---- linear layers, norms, elementwise ------------------------------------------------------

  /**
   * dx = dy·W (or dxInto += dy·W) and dWeight += dyᵀ·x: both GEMMs accumulate in place (beta = 1), so
   * no per-call gradient tensor and no separate add pass. `overwriteDWeight` (beyond the Backend
   * interface; WaitFreeTrainingOps): dWeight holds stale values and gets dyᵀ·x written (beta 0) instead
   * of added, so it needs no zeroing first.
   */
  linearBackwardInto(a: { dy: Tensor; x: Tensor; weight: Tensor; dWeight: Tensor; dBias: Tensor | null; dxInto?: Tensor | null; overwriteDWeight?: boolean }): Tensor {
    const be = this.be;
    const [outF, inF] = a.weight.shape;
    if (width(a.x) !== inF || width(a.dy) !== outF || rowCount(a.x) !== rowCount(a.dy)) {
      throw new Error(`linearBackwardInto: dy [${a.dy.shape}], x [${a.x.shape}] and weight [${a.weight.shape}] disagree`);
    }
    const dW = this.f32(a.dWeight, 'linearBackwardInto dWeight');
    if (elementCount(dW.shape) !== outF * inF) throw new Error(`linearBackwardInto: dWeight [${dW.shape}] for a weight [${a.weight.shape}]`);
    const dB = a.dBias ? this.f32(a.dBias, 'linearBackwardInto dBias') : null;
    if (dB && elementCount(dB.shape) !== outF) throw new Error(`linearBackwardInto: dBias [${dB.shape}] for ${outF} outputs`);
    const g = this.inAct(a.dy, 'linearBackwardInto dy'), xx = this.inAct(a.x, 'linearBackwardInto x'), w = this.inAct(a.weight, 'linearBackwardInto weight');
    const rows = rowCount(xx), type = this.act as GemmType;
    let dx: CudaTensor;
    if (a.dxInto) {
      dx = asCuda(a.dxInto, 'linearBackwardInto dxInto');
      if (dx.dtype !== this.act || width(dx) !== inF || rowCount(dx) !== rows) throw new Error(`linearBackwardInto: dxInto [${dx.shape}] ${dx.dtype} for dx [${a.x.shape}] ${this.act}`);
    } else {
      dx = be.alloc(a.x.shape);
    }
    this.gemm.gemm({ m: rows, n: inF, k: outF, a: g.ptr, aTrans: false, b: w.ptr, bTrans: false, c: dx.ptr, alpha: 1, beta: a.dxInto ? 1 : 0, inType: type, outType: type });
    this.gemm.gemm({ m: outF, n: inF, k: rows, a: g.ptr, aTrans: true, b: xx.ptr, bTrans: false, c: dW.ptr, alpha: 1, beta: a.overwriteDWeight ? 0 : 1, inType: type, outType: 'float32' });
    if (dB) {
      const sums = be.alloc([outF], 'float32');
      be.kernels.get('train_elementwise.cu', 'column_sums', be.defs()).launch([Math.ceil(outF / 256)], [256], [g.ptr, sums.ptr, rows, outF]);
      this.addInto(dB, sums, 1);
      be.release(sums);
    }
    return dx;
  }

  /**
   * layernorm_backward_teams' shape: threads that share a row at most (its 8-value chunks spread over
   * them), threads a block (teams of a row each) and threads an SM its registers are bounded for (64 a
   * thread at 1024). Measured at the training shape (H100, bf16 [16384, 2048], bench/tools/layernorm-ab.ts;
   * bench/RESULTS-cuda-train.md): 512 a block, 1024 an SM fastest, 2048 an SM (32 registers) 3× slower.
   */
  lnTeams = { teamMax: 256, blockThreads: 512, threadsPerSM: 1024 };

  /**
   * layernorm_backward_ring's shape: the same three numbers, the stages of each team's ring (rows in flight
   * a team: stages − 1; fewer where shared memory runs short) and the warps of layernorm_dw_sum's blocks;
   * $MPT_CUDA_LN_RING overrides some (comparisons), e.g. teamMax=64,threadsPerSM=2048. Teams of at most
   * 128 threads, 2 blocks of 1024 an SM: the fastest of the four team sizes alone at the training shape
   * (H200, bf16 [16384, 2048]: 97 calls 6.92 ms; 256 a team 7.89, 64 7.14, 32 7.06; the teams kernel 8.26),
   * since the kernel is bound by the instructions of a row's reductions and a smaller team spreads them over
   * more values a thread (bench/RESULTS-cuda-train.md).
   */
  lnRing = lnRingShape({ teamMax: 128, blockThreads: 1024, threadsPerSM: 2048, stages: 3, sumWarps: 32 });

  /**
   * The LayerNorm backward's row kernel: 'ring' (rows through shared memory) or 'teams' (rows in registers,
   * MPT_CUDA_LN_BWD=teams). The ring at its default shape by default: in the step on the H200, 7.33 / 7.41
   * against 9.13 / 9.14 ms for the 97 calls, median steps 250.0 / 248.6 against 252.4 / 251.6 ms, two
   * alternating pairs in one call (bench/RESULTS-cuda-train.md, eighth session's last call).
   */
  lnKernel: 'ring' | 'teams' = lnKernelDefault();

  /**
   * LayerNorm's backward (the Backend interface); `dxColumns` (ColumnBlockOutputs): dx written into that
   * column block of a wider tensor (no residual), by the same kernels with the row stride as a define
   * (LN_DX_WIDTHS, absent for a contiguous dx), and that tensor returned.
   */
  layerNormBackwardInto(a: { dy: Tensor; x: Tensor; weight: Tensor; eps: number; dWeight: Tensor; dBias: Tensor | null; residual?: Tensor | null; dxColumns?: ColumnBlock | null }): Tensor {
    const be = this.be;
    const g = this.inAct(a.dy, 'layerNormBackwardInto dy'), xx = this.inAct(a.x, 'layerNormBackwardInto x'), w = this.inAct(a.weight, 'layerNormBackwardInto weight');
    const n = width(xx), rows = rowCount(xx);
    if (width(g) !== n || rowCount(g) !== rows || elementCount(w.shape) !== n) throw new Error(`layerNormBackwardInto: dy [${a.dy.shape}], x [${a.x.shape}], weight [${a.weight.shape}]`);
    const dW = this.f32(a.dWeight, 'layerNormBackwardInto dWeight'), dB = a.dBias ? this.f32(a.dBias, 'layerNormBackwardInto dBias') : null;
    if (elementCount(dW.shape) !== n || (dB && elementCount(dB.shape) !== n)) throw new Error(`layerNormBackwardInto: gradients [${dW.shape}]${dB ? `, [${dB.shape}]` : ''} for width ${n}`);
    const res = a.residual ? this.inAct(a.residual, 'layerNormBackwardInto residual') : null;
    if (res && (width(res) !== n || rowCount(res) !== rows)) throw new Error(`layerNormBackwardInto: residual [${res.shape}] for x [${xx.shape}]`);
    const into = a.dxColumns ? this.columnBlock(a.dxColumns, rows, n, 'layerNormBackwardInto dxColumns') : null;
    if (into && res) throw new Error('layerNormBackwardInto: dxColumns (a column block) with a residual: add the residual to a dx of its own');
    const dx = into ? null : be.alloc(xx.shape), dxPtr = into?.ptr ?? dx!.ptr, result = a.dxColumns?.tensor ?? dx!;
    // The output's row stride in rows of the output as a define, absent for a contiguous one (the default cubins).
    const strided = { LN_DX_WIDTHS: into && into.widths !== 1 ? into.widths : false };
    if (rows === 0) return result;
    const ring = this.lnKernel === 'ring';
    // At most 8 chunks of 8 values a thread (LN_CH): registers.
    const perThread = Math.ceil(n / 8 / (ring ? this.lnRing : this.lnTeams).teamMax);
    if (n % 8 !== 0 || perThread > 8 || ![g.ptr, xx.ptr, w.ptr, res?.ptr ?? 0, dxPtr].every((p) => p % 16 === 0)) {
      // The block-per-row kernel: it adds its sums into dWeight (and dBias) with atomics.
      const threads = Math.min(1024, Math.max(32, Math.ceil(n / 4 / 32) * 32));
      be.kernels.get('layernorm_backward.cu', 'layernorm_backward', be.defs(strided)).launch([Math.min(rows, be.device.multiprocessors * 4)], [threads],
        [g.ptr, xx.ptr, w.ptr, dxPtr, dW.ptr, dB?.ptr ?? 0, rows, n, a.eps], 2 * n * 4);
      return res ? be.add(dx!, res) : result;
    }
    const sums = dB ? 2 : 1;
    const shape = ring ? this.ringShape(n, perThread, res !== null, sums) : this.teamsShape(n, perThread, sums);
    // One wave, and every team the same number of rows (within one): no partial last wave of rows.
    const perTeam = Math.ceil(rows / (shape.teams * be.device.multiprocessors * shape.minBlocks));
    const blocks = Math.ceil(rows / (shape.teams * perTeam));
    const partial = be.alloc([sums * blocks, n], 'float32');
    const defs = be.defs({ LN_CH: perThread, LN_TEAM: shape.team, LN_TEAMS: shape.teams, LN_MIN_BLOCKS: shape.minBlocks, LN_BIAS: dB !== null, ...strided, ...shape.defs });
    be.kernels.get('layernorm_backward.cu', ring ? 'layernorm_backward_ring' : 'layernorm_backward_teams', defs).launch([blocks], [shape.team * shape.teams],
      [g.ptr, xx.ptr, w.ptr, res?.ptr ?? 0, dxPtr, partial.ptr, rows, n, a.eps], shape.sharedBytes);
    const sumWarps = ring ? this.lnRing.sumWarps : 8;
    be.kernels.get('layernorm_backward.cu', 'layernorm_dw_sum', be.defs({ LN_SUM_WARPS: sumWarps === 8 ? false : sumWarps })).launch([Math.ceil(n / 32)], [32 * sumWarps],
      [partial.ptr, blocks, n, dW.ptr, dB?.ptr ?? 0]);
    be.release(partial); // stream-ordered: the next user of this block runs after the sum
    return result;
  }

  /** layernorm_backward_teams' launch: teamLayout's, with the block's shared row of sums. */
  private teamsShape(n: number, perThread: number, sums: number): LnShape {
    const { team, teams, minBlocks } = teamLayout(this.lnTeams, n, perThread);
    return { team, teams, minBlocks, sharedBytes: teams > 1 ? sums * n * 4 : 0, defs: {} };
  }

  /**
   * layernorm_backward_ring's launch: teamLayout's, each team with a ring of `stages` stages of its
   * threads' chunks of x, dy (and the residual), as shared memory holds for the blocks an SM: fewer
   * stages down to 2 first (a row in flight a team), then fewer blocks an SM, then fewer teams a block,
   * and one stage (no row in flight: the copy waited for at once) only where two do not fit.
   */
  ringShape(n: number, perThread: number, residual: boolean, sums: number): LnShape {
    const c = this.lnRing, layout = teamLayout(c, n, perThread), team = layout.team;
    let { teams, minBlocks } = layout;
    const stageBytes = (residual ? 3 : 2) * perThread * team * 8 * bytesPer(this.act);
    // The SM's shared memory: the opt-in limit of one block and the 1 KB the driver keeps a block
    // (H100/H200: 227 + 1 KB), less each block's static arrays (the reduction's, < 2 KB).
    const perSM = this.be.device.sharedMemoryOptin + 1024, fixed = 1024 + 2048;
    const fits = (stages: number) => {
      const bytes = teams * stages * stageBytes + (teams > 1 ? sums * n * 4 : 0);
      return minBlocks * (bytes + fixed) <= perSM ? bytes : 0;
    };
    const shape = (stages: number, bytes: number): LnShape => ({ team, teams, minBlocks, sharedBytes: bytes, defs: { LN_STAGES: stages, LN_RES: residual } });
    for (;;) {
      for (let stages = c.stages; stages >= Math.min(2, c.stages); stages--) {
        const bytes = fits(stages);
        if (bytes > 0) return shape(stages, bytes);
      }
      if (minBlocks > 1) minBlocks--;
      else if (teams > 1) teams--;
      else break;
    }
    const bytes = fits(1);
    if (bytes > 0) return shape(1, bytes);
    throw new Error(`layerNormBackwardInto: one stage of width ${n} (${stageBytes} bytes) does not fit in shared memory`);
  }

  /**
   * residual + x·Wᵀ (+ b). cuBLASLt reads the residual as C and writes the sum to a new output (C ≠ D);
   * up to 16 rows in bf16 (the few-row GEMMs of skinny_gemm.cu, which only add in place) the residual
   * is copied into the output first and the GEMM adds into it.
   */
  linearResidual(x: Tensor, weight: Tensor, bias: Tensor | null, residual: Tensor): Tensor {
    const be = this.be;
    const xx = this.inAct(x, 'linearResidual x'), w = this.inAct(weight, 'linearResidual weight'), r = this.inAct(residual, 'linearResidual residual');
    const [outF, inF] = w.shape, rows = rowCount(xx);
    if (width(xx) !== inF || width(r) !== outF || rowCount(r) !== rows) throw new Error(`linearResidual: x [${x.shape}], weight [${weight.shape}], residual [${residual.shape}]`);
    const out = be.alloc(r.shape), b = bias ? this.inAct(bias, 'linearResidual bias') : null;
    if (rows > 16 || this.act !== 'bfloat16') {
      if (rows > 0) be.blas.matmul({ rows, inFeatures: inF, outFeatures: outF, x: xx.ptr, w: w.ptr, y: out.ptr, bias: b?.ptr ?? null, accumulate: false, residual: r.ptr, dtype: this.act as GemmType });
      return out;
    }
    be.ctx.copyDevice(out.ptr, r.ptr, elementCount(r.shape) * 2);
    be.matmulInto(xx, w, b, out, rows, true);
    return out;
  }

  /**
   * x·W_iᵀ (+ b_i) for the `parts` equal row blocks W_i of weight (backend.ts RowBlockLinear):
   * one strided-batched GEMM (x shared, stride 0) into one [parts, rows, outF / parts] block, whose
   * slices come back; releasing one releases them all (they share the block). With a bias, 16 rows or
   * fewer, or strides not of whole 16-byte words: one linear call a part (TrainingGraph.batchedQkv off makes
   * the model call linear per part itself). Measured at the
   * mpt-1b step's shape (bench/RESULTS-cuda-train.md): 13.35 ms a step for the 24 batched against 13.79
   * for the 72 separate GEMMs.
   */
  linearRowBlocks(x: Tensor, weight: Tensor, bias: Tensor | null, parts: number): Tensor[] {
    const be = this.be;
    const xx = this.inAct(x, 'linearRowBlocks x'), w = this.inAct(weight, 'linearRowBlocks weight');
    const [outF, inF] = w.shape, rows = rowCount(xx), part = outF / parts;
    if (w.shape.length !== 2 || width(xx) !== inF || !Number.isInteger(part) || parts < 1) {
      throw new Error(`linearRowBlocks: x [${x.shape}] and weight [${weight.shape}] in ${parts} row blocks`);
    }
    const outShape = [...xx.shape.slice(0, -1), part], es = bytesPer(this.act);
    // Batch strides of whole 16-byte words (the pointers cuBLASLt's vector loads assume for every member).
    const aligned = (part * inF * es) % 16 === 0 && (rows * part * es) % 16 === 0;
    if (bias || rows <= 16 || parts === 1 || !aligned) {
      return Array.from({ length: parts }, (_, i) => be.linear(xx, this.rowBlock(w, i * part, part), bias ? this.rowBlock(bias, i * part, part) : null));
    }
    const out = be.alloc([parts, rows, part]);
    this.gemm.gemm({
      m: rows, n: part, k: inF, a: xx.ptr, aTrans: false, b: w.ptr, bTrans: true, c: out.ptr, alpha: 1, beta: 0,
      inType: this.act as GemmType, outType: this.act as GemmType, batch: { count: parts, strideA: 0, strideB: part * inF, strideC: rows * part },
    });
    return Array.from({ length: parts }, (_, i) => be.view(this.rowBlock(out, i, 1), outShape));
  }

  rowBlock(t: Tensor, start: number, count: number): Tensor {
    const c = asCuda(t, 'rowBlock'), rows = c.shape[0];
    if (c.shape.length < 1 || !Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > rows) {
      throw new Error(`rowBlock: rows [${start}, ${start + count}) of a tensor [${c.shape}]`);
    }
    const rowBytes = (elementCount(c.shape) / Math.max(rows, 1)) * (c.dtype === 'bfloat16' || c.dtype === 'float16' ? 2 : 4);
    return new CudaTensor([count, ...c.shape.slice(1)], c.dtype, c.block, c.offset + start * rowBytes);
  }

  // GELU' from a table when the backend's geluTable is on (its comment: the switch, the measurements).
  private geluSlopes: CudaTensor | null = null;
  /** The float32 table of GELU' over the tabled bf16 inputs (gelu-table.ts), built on first use. */
  geluSlopeTable(): CudaTensor {
    return this.geluSlopes ??= buildGeluTable(this.be, 'train_elementwise.cu', 'gelu_slope_table_build', 'float32');
  }

  geluBackward(dy: Tensor, x: Tensor): Tensor {
    const g = this.inAct(dy, 'geluBackward dy'), xx = this.inAct(x, 'geluBackward x'), n = elementCount(xx.shape);
    if (elementCount(g.shape) !== n) throw new Error(`geluBackward: dy [${dy.shape}] for x [${x.shape}]`);
    const out = this.be.alloc(xx.shape);
    const vectors = n % 8 === 0 && [g, xx, out].every((t) => t.ptr % 16 === 0);
    if (vectors && this.act === 'bfloat16' && this.be.geluTable) {
      launchGeluTable(this.be, 'train_elementwise.cu', 'gelu_backward_table8', [g.ptr, xx.ptr, out.ptr], n / 8, this.geluSlopeTable());
    } else if (vectors) this.be.launch1d('train_elementwise.cu', 'gelu_backward8', n / 8, [g.ptr, xx.ptr, out.ptr, n / 8]);
    else this.be.launch1d('train_elementwise.cu', 'gelu_backward', n, [g.ptr, xx.ptr, out.ptr, n]);
    return out;
  }

  clampBackward(dy: Tensor, x: Tensor, limit: number): Tensor {
    const g = this.inAct(dy, 'clampBackward dy'), xx = this.inAct(x, 'clampBackward x'), n = elementCount(xx.shape);
    if (elementCount(g.shape) !== n) throw new Error(`clampBackward: dy [${dy.shape}] for x [${x.shape}]`);
    const out = this.be.alloc(xx.shape);
    this.be.launch1d('train_elementwise.cu', 'clamp_backward', n, [g.ptr, xx.ptr, out.ptr, limit, n]);
    return out;
  }

  embeddingBackwardInto(dst: Tensor, ids: Tensor, dy: Tensor, factor: number): void {
    const d = this.f32(dst, 'embeddingBackwardInto dst'), g = this.floatSource(dy, 'embeddingBackwardInto dy');
    const i = asCuda(ids, 'embeddingBackwardInto ids');
    if (i.dtype !== 'int32') throw new Error(`embeddingBackwardInto: ids are ${i.dtype}, expected int32`);
    const [vocab, w] = d.shape, n = elementCount(i.shape);
    if (width(g) !== w || rowCount(g) !== n) throw new Error(`embeddingBackwardInto: dy [${dy.shape}] for ${n} ids into [${dst.shape}]`);
    this.be.launch1d('train_elementwise.cu', 'embedding_backward', n * w, [d.ptr, i.ptr, g.ptr, n, w, vocab, factor, this.be.errorFlag], this.defsFor(g.dtype));
  }

  addInto(dst: Tensor, src: Tensor, factor: number): void {
    const d = this.f32(dst, 'addInto dst'), s = this.floatSource(src, 'addInto src'), n = elementCount(d.shape);
    if (elementCount(s.shape) !== n) throw new Error(`addInto: [${src.shape}] into [${dst.shape}]`);
    this.be.launch1d('train_elementwise.cu', 'add_into', n, [d.ptr, s.ptr, factor, n], this.defsFor(s.dtype));
  }

  scaleInPlace(dst: Tensor, factor: number): void {
    const d = this.floatSource(dst, 'scaleInPlace'), n = elementCount(d.shape);
    this.be.launch1d('train_elementwise.cu', 'scale_in_place', n, [d.ptr, factor, n], this.defsFor(d.dtype));
  }

  sumOfSquares(x: Tensor): number {
    return this.sumOfSquaresAll([x]);
  }

  /** Each tensor's block partials go to their own slots of one scratch buffer; one sum of all slots, one copy out. */
  sumOfSquaresAll(xs: readonly Tensor[]): number {
    const sum = this.enqueueSumOfSquares(xs);
    if (sum === null) return 0;
    const out = new Float64Array(1);
    this.be.ctx.copyOut(out, sum);
    return out[0];
  }

  /** sum_squares_multi's tables (a chunk: the elements a block takes whole). */
  private readonly squaresTables: MultiTensorTables;
  /** One sum_squares_multi launch for all the tensors instead of one sum_squares_partial4 each; false: one each (comparisons). */
  squaresInOneLaunch = process.env.MPT_SQUARES_MULTI !== '0';

  /** Σ x² over the tensors into the float64 scratch's first slot (its device address), in stream order; null when there is nothing to sum. */
  private enqueueSumOfSquares(xs: readonly Tensor[]): number | null {
    const sources = xs.map((x) => this.floatSource(x, 'sumOfSquares')).filter((s) => elementCount(s.shape) > 0);
    if (sources.length > 1 && this.squaresInOneLaunch && sources.every((s) => s.dtype === 'float32' && s.ptr % 16 === 0)) return this.enqueueSquaresMulti(sources);
    const blocksOf = sources.map((s) => Math.min(REDUCE_BLOCKS, Math.ceil(elementCount(s.shape) / 256)));
    const slots = blocksOf.reduce((a, b) => a + b, 0);
    if (slots === 0) return null;
    const scratch = this.doubles(slots + 1), k = this.be.kernels;
    let slot = 1;
    sources.forEach((s, i) => {
      const vector = s.dtype === 'float32' && s.ptr % 16 === 0; // the gradients: float32 from the allocator, 512-byte aligned
      k.get('train_elementwise.cu', vector ? 'sum_squares_partial4' : 'sum_squares_partial', this.defsFor(s.dtype))
        .launch([blocksOf[i]], [256], [s.ptr, elementCount(s.shape), scratch.ptr + 8 * slot]);
      slot += blocksOf[i];
    });
    k.get('train_elementwise.cu', 'sum_doubles', this.defsFor('float32')).launch([1], [1024], [scratch.ptr + 8, slots, scratch.ptr]);
    return scratch.ptr;
  }

  /** enqueueSumOfSquares for float32 tensors at 16-byte aligned addresses (the gradients): one launch over a chunk table. */
  private enqueueSquaresMulti(sources: readonly CudaTensor[]): number {
    const sizes = sources.map((s) => elementCount(s.shape));
    // struct SquaresTensor { const float* x; long long n; }
    const tables = this.squaresTables.update(sizes, sources.map((s, i) => [s.ptr, sizes[i]]));
    const blocks = Math.min(tables.count, 4 * this.be.device.multiprocessors);
    const scratch = this.doubles(blocks + 1), k = this.be.kernels;
    k.get('train_elementwise.cu', 'sum_squares_multi', this.defsFor('float32', { SQ_CHUNK: this.squaresTables.chunk })).launch([blocks], [256],
      [tables.tensors, tables.chunks, tables.count, scratch.ptr + 8]);
    k.get('train_elementwise.cu', 'sum_doubles', this.defsFor('float32')).launch([1], [1024], [scratch.ptr + 8, blocks, scratch.ptr]);
    return scratch.ptr;
  }

  /** One parameter's AdamW operands, checked: float32 master, gradient and moments of one size, the copy of that size. */
  private adamwOperands(a: AdamwTensors) {
    const p = this.f32(a.param, 'adamwStep param'), g = this.f32(a.grad, 'adamwStep grad'), m = this.f32(a.m, 'adamwStep m'), v = this.f32(a.v, 'adamwStep v');
    const n = elementCount(p.shape);
    for (const [name, t] of [['grad', g], ['m', m], ['v', v]] as const) {
      if (elementCount(t.shape) !== n) throw new Error(`adamwStep: ${name} [${t.shape}] for a parameter [${p.shape}]`);
    }
    const copy = a.computeCopy ? this.floatSource(a.computeCopy, 'adamwStep computeCopy') : null;
    if (copy && elementCount(copy.shape) !== n) throw new Error(`adamwStep: compute copy [${copy.shape}] for a parameter [${p.shape}]`);
    return { p, g, m, v, copy, n };
  }

  private static adamwScalars(a: { lr: number; beta1: number; beta2: number; eps: number; decay: number; step: number }): number[] {
    return [a.lr / (1 - a.beta1 ** a.step), a.beta1, a.beta2, a.eps, 1 - a.decay, Math.sqrt(1 - a.beta2 ** a.step)];
  }

  adamwStep(a: AdamwTensors & { lr: number; beta1: number; beta2: number; eps: number; decay: number; step: number; gradScale?: DeviceScalar | null }): void {
    const { p, g, m, v, copy, n } = this.adamwOperands(a);
    const defs = { MPT_BF16: false, COPY_BF16: copy?.dtype === 'bfloat16', COPY_F32: copy?.dtype === 'float32' };
    this.be.launch1d('adamw.cu', 'adamw_step', n, [p.ptr, g.ptr, m.ptr, v.ptr, ...CudaTrainingOps.adamwScalars(a), n, copy?.ptr ?? 0, this.gradScalePointer(a.gradScale)], defs);
  }

  /** The device address of a clipping factor (gradNormOnDevice's), 0 for none. */
  private gradScalePointer(s: DeviceScalar | null | undefined): number {
    if (!s) return 0;
    const stats = asCuda(s.tensor, 'adamw gradScale');
    if (s.type !== 'float32' || stats.dtype !== 'float32' || elementCount(stats.shape) * 4 < s.offset + 4 || s.offset % 4 !== 0) throw new Error(`adamw gradScale: float32 at byte ${s.offset} of a ${stats.dtype} tensor [${stats.shape}]`);
    return stats.ptr + s.offset;
  }

  /**
   * adamw_multi's tables (a chunk: the elements a block updates). The tensor table (48 bytes a tensor)
   * changes whenever the gradients come from the caching allocator at other addresses.
   */
  private readonly adamwTables: MultiTensorTables;

  /**
   * One adamw_multi launch for all the parameters (16-byte accesses; one launch instead of one a
   * parameter). Tensors not 16-byte aligned, or compute copies of mixed dtypes, take adamwStep each.
   */
  adamwStepAll(a: { tensors: readonly AdamwTensors[]; lr: number; beta1: number; beta2: number; eps: number; decay: number; step: number; gradScale?: DeviceScalar | null }): void {
    const { tensors, gradScale, ...hyper } = a;
    const ops = tensors.map((t) => this.adamwOperands(t)).filter((o) => o.n > 0);
    if (ops.length === 0) return;
    const copyTypes = new Set(ops.map((o) => o.copy?.dtype ?? null));
    const copyType = [...copyTypes].find((t) => t !== null) ?? null;
    const aligned = ops.every((o) => [o.p, o.g, o.m, o.v, o.copy].every((t) => !t || t.ptr % 16 === 0));
    if (!aligned || (copyTypes.size > 1 && !(copyTypes.size === 2 && copyTypes.has(null)))) {
      for (const t of tensors) this.adamwStep({ ...t, ...hyper, gradScale });
      return;
    }
    // struct AdamwTensor { float* p; const float* g; float* m; float* v; void* copy; long long n; }
    const tables = this.adamwTables.update(ops.map((o) => o.n), ops.map((o) => [o.p.ptr, o.g.ptr, o.m.ptr, o.v.ptr, o.copy?.ptr ?? 0, o.n]));
    const defs = { MPT_BF16: false, COPY_BF16: copyType === 'bfloat16', COPY_F32: copyType === 'float32', ADAMW_CHUNK: this.adamwTables.chunk };
    this.be.kernels.get('adamw.cu', 'adamw_multi', defs).launch([tables.count], [256],
      [tables.tensors, tables.chunks, ...CudaTrainingOps.adamwScalars(hyper), this.gradScalePointer(gradScale)]);
  }

  // ---- a training step that never waits for the device (backend.ts: WaitFreeTrainingOps) --

  private readonly staging: Array<{ buffer: PinnedBuffer | null; copied: CudaEvent }> = [];
  private stagingNext = 0;
  /** stage()'s pinned chunks, and the type of each value staged since the last settle(). */
  private readonly stagedChunks: PinnedBuffer[] = [];
  private readonly staged: Array<'float32' | 'float64'> = [];

  /**
   * int32 host values → a new device tensor (in the current scope), in stream order without waiting:
   * staged through a ring of pinned buffers, each reused once the copy out of it has completed (a host
   * more than STAGING_SLOTS uploads ahead of the device waits there).
   */
  uploadAsync(data: Int32Array, shape: readonly number[]): Tensor {
    if (data.length !== elementCount(shape)) throw new Error(`uploadAsync: ${data.length} values for shape [${shape.join(', ')}]`);
    const out = this.be.alloc(shape, 'int32');
    this.copyInStaged(out.ptr, data);
    return out;
  }

  /** Host bytes → device address `dst` in stream order without waiting, through the ring of pinned buffers. */
  private copyInStaged(dst: number, data: ArrayBufferView): void {
    if (data.byteLength === 0) return;
    if (this.staging.length < STAGING_SLOTS) this.staging.push({ buffer: null, copied: new CudaEvent(this.be.ctx, 2 /* CU_EVENT_DISABLE_TIMING */) });
    const slot = this.staging[this.stagingNext % this.staging.length];
    this.stagingNext++;
    slot.copied.synchronize(); // at once unless this slot's last copy is still queued
    if (!slot.buffer || slot.buffer.bytes < data.byteLength) {
      slot.buffer?.free();
      slot.buffer = new PinnedBuffer(Math.max(data.byteLength, 1 << 16), 'training uploads (token ids, targets, tables)');
    }
    new Uint8Array(slot.buffer.view, 0, data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    this.be.ctx.copyInPinned(dst, slot.buffer, data.byteLength);
    slot.copied.record();
  }

  /**
   * Every tensor set to zero in place (memset, stream order): gradients kept from step to step. Tensors
   * that lie end to end in memory (views packed into one block: backward.ts keptGradients) take one memset.
   */
  zeroInPlace(ts: readonly Tensor[]): void {
    const ranges = ts.map((t) => {
      const c = asCuda(t, 'zeroInPlace');
      const bytes = elementCount(c.shape) * bytesPer(c.dtype);
      if (bytes % 4 !== 0 || c.ptr % 4 !== 0) throw new Error(`zeroInPlace: a ${c.dtype} tensor [${c.shape}] that is not made of whole 4-byte words`);
      return { start: c.ptr, end: c.ptr + bytes };
    }).sort((a, b) => a.start - b.start);
    for (let i = 0; i < ranges.length;) {
      let end = ranges[i].end, j = i + 1;
      while (j < ranges.length && ranges[j].start <= end) end = Math.max(end, ranges[j++].end); // adjacent or overlapping
      this.be.ctx.fill32(ranges[i].start, 0, (end - ranges[i].start) / 4);
      i = j;
    }
  }

  /**
   * The global gradient norm and torch's clipping factor (min(1, maxNorm / (norm + 1e-6)); 1 without
   * maxNorm), computed on the device: nothing is read back. Pass `factor` to adamwStepAll as gradScale.
   */
  gradNormOnDevice(grads: readonly Tensor[], maxNorm: number | null): { norm: DeviceScalar; factor: DeviceScalar } {
    const stats = this.be.alloc([4], 'float32'); // float64 norm at byte 0, float32 factor at byte 8
    const sum = this.enqueueSumOfSquares(grads);
    if (sum === null) {
      this.be.ctx.fill32(stats.ptr, 0, 2);
      this.be.ctx.fill32(stats.ptr + 8, 0x3f800000, 1); // 1.0f
    } else {
      this.be.kernels.get('train_elementwise.cu', 'grad_clip_factor', this.defsFor('float32')).launch([1], [32], [sum, maxNorm ?? -1, stats.ptr, stats.ptr + 8]);
    }
    return { norm: { tensor: stats, offset: 0, type: 'float64' }, factor: { tensor: stats, offset: 8, type: 'float32' } };
  }

  /**
   * Copy the values to host memory in stream order (no wait): settle() returns them. For a step's
   * results (loss sums, gradient norm), read once per log interval instead of once a step.
   */
  stage(values: readonly DeviceScalar[]): void {
    const ctx = this.be.ctx;
    for (const v of values) {
      const c = asCuda(v.tensor, 'stage'), size = v.type === 'float64' ? 8 : 4;
      if (v.offset < 0 || v.offset % size !== 0 || v.offset + size > elementCount(c.shape) * bytesPer(c.dtype)) {
        throw new Error(`stage: a ${v.type} at byte ${v.offset} of a ${c.dtype} tensor [${c.shape}]`);
      }
      const at = this.staged.length, chunk = Math.floor(at / STAGED_PER_CHUNK);
      if (chunk === this.stagedChunks.length) this.stagedChunks.push(new PinnedBuffer(8 * STAGED_PER_CHUNK, 'training results (losses, gradient norms)'));
      ctx.copyOutAsync(this.stagedChunks[chunk], c.ptr + v.offset, size, 8 * (at % STAGED_PER_CHUNK));
      this.staged.push(v.type);
    }
  }

  /**
   * The values staged since the last call, in order, after one wait for the device. Throws, as
   * download does, when a kernel recorded a token id outside the vocabulary since the last check.
   */
  settle(): number[] {
    const types = this.staged.splice(0); // spent even when the check below throws
    this.be.checkErrors(); // one wait: the staged copies have landed after it
    return types.map((type, i) => {
      const view = new DataView(this.stagedChunks[Math.floor(i / STAGED_PER_CHUNK)].view), o = 8 * (i % STAGED_PER_CHUNK);
      return type === 'float64' ? view.getFloat64(o, true) : view.getFloat32(o, true);
    });
  }

  // ---- the output layer fused with cross entropy -----------------------------------------------

  /**
   * `hostTargets`: the caller's host copy of `targets` (beyond the Backend interface): checked and
   * counted here instead of downloading the targets, which would wait for the device (the forward).
   * `overwriteDTable`: dTableInto holds stale values; the first row block's GEMM writes it (beta 0).
   */
  crossEntropyWithOutput(args: {
    x: Tensor; table: Tensor; targets: Tensor; logitScale: number | null; lossScale: number; gradients: boolean; dTableInto?: Tensor | null;
    hostTargets?: Int32Array | null; overwriteDTable?: boolean;
  }): { lossSum: Tensor; count: number; dx: Tensor | null; dTable: Tensor | null } {
    const be = this.be;
    const x = this.inAct(args.x, 'crossEntropyWithOutput x'), table = this.inAct(args.table, 'crossEntropyWithOutput table');
    const [vocab, d] = table.shape, n = rowCount(x);
    if (width(x) !== d) throw new Error(`crossEntropyWithOutput: x [${args.x.shape}] against table [${args.table.shape}]`);
    const targets = asCuda(args.targets, 'crossEntropyWithOutput targets');
    if (targets.dtype !== 'int32' || elementCount(targets.shape) !== n) throw new Error(`crossEntropyWithOutput: ${elementCount(targets.shape)} ${targets.dtype} targets for ${n} rows`);
    // The count (a host number) and the range check need the targets here: n int32s.
    if (args.hostTargets && args.hostTargets.length !== n) throw new Error(`crossEntropyWithOutput: ${args.hostTargets.length} host targets for ${n} rows`);
    const hostTargets = args.hostTargets ?? (be.download(targets) as Int32Array);
    let count = 0;
    for (const t of hostTargets) {
      if (t >= vocab || t < -1) throw new RangeError(`cross entropy: target ${t} is outside the vocabulary of ${vocab}`);
      if (t >= 0) count++;
    }
    const c = args.logitScale ?? 1, type = this.act as GemmType;
    // Row blocks of equal size within the logit budget (16384 rows: 4 × 4096, not 3 × 5322 + a thin 418).
    const maxRows = Math.max(1, Math.min(n, Math.floor(this.logitBlockElements / vocab)));
    const blockRows = n === 0 ? 1 : Math.ceil(n / Math.ceil(n / maxRows));
    const losses = be.alloc([n], 'float32');
    const dx = args.gradients ? be.alloc([n, d]) : null;
    const into = args.gradients && args.dTableInto ? this.f32(args.dTableInto, 'crossEntropyWithOutput dTableInto') : null;
    if (into && (into.shape[0] !== vocab || width(into) !== d)) throw new Error(`crossEntropyWithOutput: dTableInto [${into.shape}] for a table [${table.shape}]`);
    // The table's gradient accumulates over row blocks (beta = 1): straight into the caller's accumulator when given.
    const dTable = into ?? (args.gradients ? be.alloc([vocab, d], 'float32') : null);
    if (dTable && !into) be.ctx.fill32(dTable.ptr, 0, vocab * d);
    // A table the caller says is stale: the first row block writes it instead of adding (zeroed if there is none).
    const writeFirst = into !== null && args.overwriteDTable === true;
    if (writeFirst && n === 0) be.ctx.fill32(into.ptr, 0, vocab * d);
    // The logits in the activation type: bf16 is autocast's F.linear output, from which the original
    // code computes its float32 loss (float32 logits cost 0.95 ms a step more: bench/RESULTS-cuda-train.md).
    // A row of logits in shared memory (read once) where it fits, beside block_sum's and block_max's 256 bytes each.
    const es = bytesPer(type), rowInShared = this.crossEntropyRowInShared && vocab % 4 === 0 && es * vocab + 1024 <= be.device.sharedMemoryOptin;
    be.scope(() => {
      const logits = be.alloc([blockRows, vocab]);
      // dz overwrites the logits (the kernel reads a row whole before writing its dz): one
      // [blockRows, vocab] buffer fewer at the step's peak.
      const dz = args.gradients ? logits : null;
      for (let r0 = 0; r0 < n; r0 += blockRows) {
        const rows = Math.min(blockRows, n - r0);
        const xBlock = x.ptr + r0 * d * es;
        // z = c · x·Wᵀ, rounded once to the activation type
        this.gemm.gemm({ m: rows, n: vocab, k: d, a: xBlock, aTrans: false, b: table.ptr, bTrans: true, c: logits.ptr, alpha: c, beta: 0, inType: type, outType: type });
        be.kernels.get('cross_entropy.cu', rowInShared ? 'cross_entropy_rows_smem' : 'cross_entropy_rows', be.defs()).launch([rows], [1024],
          [logits.ptr, targets.ptr + r0 * 4, losses.ptr + r0 * 4, dz?.ptr ?? 0, vocab, args.lossScale * c, args.gradients ? 1 : 0], rowInShared ? es * vocab : 0);
        if (!dz || !dx || !dTable) continue;
        // dz is the gradient of the raw logits x·Wᵀ (lossScale·c folded in): dx = dz·W, dTable += dzᵀ·x
        this.gemm.gemm({ m: rows, n: d, k: vocab, a: dz.ptr, aTrans: false, b: table.ptr, bTrans: false, c: dx.ptr + r0 * d * es, alpha: 1, beta: 0, inType: type, outType: type });
        this.gemm.gemm({ m: vocab, n: d, k: rows, a: dz.ptr, aTrans: true, b: xBlock, bTrans: false, c: dTable.ptr, alpha: 1, beta: writeFirst && r0 === 0 ? 0 : 1, inType: type, outType: 'float32' });
      }
    });
    const lossSum = be.alloc([1], 'float32');
    be.kernels.get('train_elementwise.cu', 'sum_floats', be.defs()).launch([1], [1024], [losses.ptr, n, lossSum.ptr]);
    be.release(losses);
    return { lossSum, count, dx, dTable };
  }
}
