import {
  trainingBackend, trainingOpsWith, waitFreeOps, type AttentionArgs, type Backend, type ColumnBlockOutputs, type RowBlockLinear, type Tensor, type TrainingBackend,
} from '../backend/backend.js';
import { alibiSlopes, softmaxScale, type MptConfig } from './config.js';
import type { Affine, MptParams } from './params.js';

/**
 * The forward pass for training: the same math as MptModel.forward (DESIGN.md, "The model, exactly")
 * over whole sequences without a KV cache, keeping what the backward pass needs (the tape).
 * What is cheap to make again is not kept: LN_1's output (one LayerNorm pass from xIn) is recomputed by
 * the backward, and so is LN_2's when `keepLn2Output` is off; a block's other temporaries are released
 * when the block ends. q, k, v come from the three row blocks of Wqkv as three contiguous tensors (the
 * layout attention reads), so no fused QKV is kept beside them and no column is copied; a backend with
 * `linearRowBlocks` (CUDA: one strided-batched GEMM) makes them in one call, as three slices of one
 * [3, rows, d] buffer.
 */
export interface QkvTensors { q: Tensor; k: Tensor; v: Tensor }

export interface BlockTape {
  xIn: Tensor;
  /** q, k, v before clip_qkv (only with clipping; the clamp's gradient needs them). */
  qkvRaw: QkvTensors | null;
  /** q and k before QK LayerNorm (the same tensors as q and k without it). */
  qPre: Tensor;
  kPre: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  /** Attention output [batch·t, d] before out_proj, and its log-sum-exp per (batch, head, query). */
  attended: Tensor;
  logSumExp: Tensor;
  xMid: Tensor;
  /** LN_2(xMid), the MLP's input (null when the backward recomputes it: TrainingGraph.keepLn2Output off). */
  ln2Out: Tensor | null;
  /** MLP up projection and GELU of it: GELU's backward reads the first, down's weight gradient the second. */
  up: Tensor;
  activated: Tensor;
}

export interface Tape {
  batch: number;
  seqLen: number;
  ids: Tensor;
  /** Position ids for learned position embeddings (null with ALiBi). */
  positions: Tensor | null;
  blocks: BlockTape[];
  /** The residual stream after the last block, and LN_f of it (the input of the output layer). */
  xFinal: Tensor;
  hidden: Tensor;
}

/** What both passes share: the model's math constants and the attention call for a batch. */
export class TrainingGraph {
  readonly slopes: Float32Array | null;
  readonly scale: number;
  readonly backend: TrainingBackend;
  /**
   * Keep LN_2's output on the tape for the backward (one [rows, d] tensor a block: 64 MiB at 16384 rows
   * of the 1.3B model in bf16, 1.5 GiB over 24 blocks) instead of recomputing it there (one LayerNorm
   * pass a block). MPT_TRAIN_RECOMPUTE_LN2=1: recompute (comparisons; a tighter memory budget).
   */
  keepLn2Output = process.env.MPT_TRAIN_RECOMPUTE_LN2 !== '1';
  /** q, k, v through the backend's linearRowBlocks where it has one; false: three linear calls (MPT_TRAIN_QKV_BATCHED=0, comparisons). */
  batchedQkv = process.env.MPT_TRAIN_QKV_BATCHED !== '0';
  private readonly rowBlocks: RowBlockLinear | null;
  /**
   * The backward of Wqkv as one input-gradient GEMM and one weight-gradient GEMM over a [rows, 3·d] dQKV
   * where the backend has ColumnBlockOutputs (backward.ts says for which models); false: three GEMMs of
   * each over Wqkv's row blocks (MPT_TRAIN_QKV_FUSED_BACKWARD=0, comparisons).
   */
  fusedQkvBackward = process.env.MPT_TRAIN_QKV_FUSED_BACKWARD !== '0';
  /** The backend's ColumnBlockOutputs, or null where it has none. */
  readonly columnOutputs: ColumnBlockOutputs | null;

  constructor(readonly config: MptConfig, backend: Backend, readonly params: MptParams) {
    this.backend = trainingBackend(backend);
    this.rowBlocks = trainingOpsWith<RowBlockLinear>(backend, 'linearRowBlocks');
    this.columnOutputs = trainingOpsWith<ColumnBlockOutputs>(backend, 'columnBlocks');
    this.slopes = config.alibi ? alibiSlopes(config) : null;
    this.scale = softmaxScale(config);
  }

  attentionArgs(q: Tensor, k: Tensor, v: Tensor, batch: number, t: number): AttentionArgs {
    const be = this.backend, d = this.config.dModel;
    return {
      q: be.view(q, [batch, t, d]), k: be.view(k, [batch, t, d]), v: be.view(v, [batch, t, d]), kvLen: t,
      nHeads: this.config.nHeads, scale: this.scale, alibiSlopes: this.slopes, keyMask: null,
    };
  }

  norm(x: Tensor, n: Affine): Tensor {
    return this.backend.layerNorm(x, n.weight, n.bias, this.config.layerNormEps);
  }

  affine(x: Tensor, l: Affine): Tensor {
    return this.backend.linear(x, l.weight, l.bias);
  }

  /** Row block i (0: q, 1: k, 2: v) of the fused Wqkv [3·d, d] and of its bias, as an Affine of its own. */
  qkvPart(l: Affine, i: number): Affine {
    const be = this.backend, d = this.config.dModel;
    return { weight: be.rowBlock(l.weight, i * d, d), bias: l.bias ? be.rowBlock(l.bias, i * d, d) : null };
  }

  /** q, k, v = a · Wqkvᵀ split in three, each computed into its own contiguous tensor. */
  qkv(a: Tensor, wqkv: Affine): QkvTensors {
    if (this.batchedQkv && this.rowBlocks) {
      const [q, k, v] = this.rowBlocks.linearRowBlocks(a, wqkv.weight, wqkv.bias, 3);
      return { q, k, v };
    }
    return { q: this.affine(a, this.qkvPart(wqkv, 0)), k: this.affine(a, this.qkvPart(wqkv, 1)), v: this.affine(a, this.qkvPart(wqkv, 2)) };
  }

  /** x + l(a): the residual add folded into the linear layer. */
  residual(x: Tensor, a: Tensor, l: Affine): Tensor {
    return this.backend.linearResidual(a, l.weight, l.bias, x);
  }

  /** ids: [batch, t] row-major token ids. */
  forward(ids: Int32Array, batch: number): Tape {
    const { backend: be, config: c, params: p } = this;
    const t = ids.length / batch;
    if (!Number.isInteger(t) || t < 1) throw new Error(`training forward: ${ids.length} ids do not make ${batch} rows`);
    if (t > c.maxSeqLen) throw new Error(`training forward: sequences of ${t} tokens exceed max_seq_len ${c.maxSeqLen}`);
    const d = c.dModel;
    const waitFree = waitFreeOps(be);
    const idTensor = waitFree ? waitFree.uploadAsync(ids, [batch * t]) : be.upload(ids, [batch * t], 'int32');
    let x = be.embedding(idTensor, p.wte);
    let positions: Tensor | null = null;
    if (p.wpe) {
      positions = be.upload(Int32Array.from({ length: batch * t }, (_, i) => i % t), [batch * t], 'int32');
      x = be.add(x, be.embedding(positions, p.wpe));
    }
    const blocks: BlockTape[] = [];
    for (const block of p.blocks) {
      const xIn = x;
      // One scope a block: what the tape does not keep (LN_1's output, and LN_2's when keepLn2Output is off) is
      // released at its end.
      const { tape, xOut } = be.scope(() => {
        const raw = this.qkv(this.norm(xIn, block.ln1), block.wqkv);
        const clip = c.clipQkv;
        const { q: qPre, k: kPre, v } = clip === null ? raw : { q: be.clamp(raw.q, clip), k: be.clamp(raw.k, clip), v: be.clamp(raw.v, clip) };
        const q = block.qLn ? this.norm(qPre, block.qLn) : qPre;
        const k = block.kLn ? this.norm(kPre, block.kLn) : kPre;
        const { out, logSumExp } = be.attentionForTraining(this.attentionArgs(q, k, v, batch, t));
        const attended = be.view(out, [batch * t, d]);
        const xMid = this.residual(xIn, attended, block.out);
        const ln2Out = this.norm(xMid, block.ln2);
        const up = this.affine(ln2Out, block.up);
        const activated = be.gelu(up);
        const xOut = this.residual(xMid, activated, block.down);
        const tape: BlockTape = {
          xIn, qkvRaw: clip === null ? null : raw, qPre, kPre, q, k, v, attended, logSumExp, xMid, ln2Out: this.keepLn2Output ? ln2Out : null, up, activated,
        };
        return { tape, xOut };
      });
      blocks.push(tape);
      x = xOut;
    }
    return { batch, seqLen: t, ids: idTensor, positions, blocks, xFinal: x, hidden: this.norm(x, p.lnF) };
  }
}

/** Next-token targets for [batch, t] ids: target[b, i] = ids[b, i + 1]; the last position of each row is ignored (-1). */
export function nextTokenTargets(ids: Int32Array, batch: number): Int32Array {
  const t = ids.length / batch;
  const targets = new Int32Array(ids.length);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < t; i++) targets[b * t + i] = i + 1 < t ? ids[b * t + i + 1] : -1;
  }
  return targets;
}
