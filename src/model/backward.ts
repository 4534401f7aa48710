import { elementCount, waitFreeOps, type Backend, type Tensor } from '../backend/backend.js';
import { parameterShapes, type MptConfig } from './config.js';
import type { Affine, MptParams } from './params.js';
import { nextTokenTargets, TrainingGraph, type Tape } from './training-forward.js';

/**
 * The backward pass of the MPT decoder, block by block in reverse, written against the Backend.
 * Gradients are added into float32 tensors keyed by canonical parameter name (parameterShapes),
 * so microbatches accumulate by calling this again with the same map. The tied embedding gets the
 * output layer's gradient and the input embedding's (scaled by embedding_fraction) in one tensor.
 */
export type Gradients = Map<string, Tensor>;

/** Zeroed float32 gradient tensors for every parameter. */
export function zeroGradients(config: MptConfig, backend: Backend): Gradients {
  const grads: Gradients = new Map();
  for (const [name, shape] of parameterShapes(config)) grads.set(name, backend.zeros(shape, 'float32'));
  return grads;
}

export interface LossResult {
  /** Σ of the per-token losses over counted tokens, and how many were counted. */
  lossSum: number;
  count: number;
}

/**
 * Loss of next-token prediction on ids [batch, t] (the last position predicts nothing) and, when
 * `grads` is given, the gradient of `lossScale · Σ loss` added into it. Pass lossScale = 1/N for
 * the mean over N tokens (N over the whole global batch when accumulating microbatches).
 */
export function lossAndGradients(
  graph: TrainingGraph, ids: Int32Array, batch: number, grads: Gradients | null, lossScale: number,
): LossResult {
  const { tape, ce } = forwardAndLoss(graph, ids, batch, grads, lossScale);
  const lossSum = (graph.backend.download(ce.lossSum) as Float32Array)[0];
  if (grads) backward(graph, tape, ce.dx!, grads);
  return { lossSum, count: ce.count };
}

/**
 * lossAndGradients with the summed loss left on the device ([1] float32, in the caller's scope): with
 * a backend's wait-free ops (waitFreeOps) nothing here waits for the device, so the host queues the
 * backward while the forward still runs. `staleGradients` (wait-free ops only): `grads` holds old values
 * instead of zeros (a step's first microbatch): the gradients a GEMM makes whole (overwrittenGradients)
 * are written, not added to, and only the others are zeroed first — no pass over all of them.
 */
export function lossAndGradientsOnDevice(
  graph: TrainingGraph, ids: Int32Array, batch: number, grads: Gradients | null, lossScale: number, staleGradients = false,
): { lossSum: Tensor; count: number } {
  const waitFree = waitFreeOps(graph.backend);
  if (staleGradients && (!waitFree || !grads)) throw new Error('lossAndGradientsOnDevice: stale gradients need gradients and a backend with wait-free ops');
  const overwrite = staleGradients ? overwrittenGradients(graph) : null;
  if (waitFree && grads && overwrite) waitFree.zeroInPlace([...grads].filter(([name]) => !overwrite.has(name)).map(([, g]) => g));
  const { tape, ce } = forwardAndLoss(graph, ids, batch, grads, lossScale, overwrite);
  if (grads) backward(graph, tape, ce.dx!, grads, overwrite);
  return { lossSum: ce.lossSum, count: ce.count };
}

/**
 * The gradients whose first write in a backward pass covers all of them with one GEMM: the linear
 * layers' weights (Wqkv by one GEMM, or by its three row blocks) and the output table (the cross entropy's first row
 * block, before the input embedding adds into it when tied).
 */
export function overwrittenGradients(graph: TrainingGraph): Set<string> {
  const p = graph.params, names = new Set<string>([p.lmHead ? 'lmHead.weight' : 'wte.weight']);
  p.blocks.forEach((_, i) => {
    for (const layer of ['attn.wqkv', 'attn.out', 'mlp.up', 'mlp.down']) names.add(`blocks.${i}.${layer}.weight`);
  });
  return names;
}

/**
 * Gradients to keep from step to step for lossAndGradientsOnDevice's staleGradients path: those it
 * zeroes each step (not in overwrittenGradients: LayerNorm weights, biases, …) are views into one
 * float32 block, adjacent where their sizes allow (each starts at a multiple of 128 values, 512 bytes),
 * so that zeroing them all is one memset instead of one a tensor. `owned`: the tensors to release.
 */
export function keptGradients(graph: TrainingGraph): { grads: Gradients; owned: Tensor[] } {
  const be = graph.backend, overwrite = overwrittenGradients(graph), shapes = parameterShapes(graph.config);
  const align = (n: number) => Math.ceil(n / 128) * 128;
  let total = 0;
  for (const [name, shape] of shapes) if (!overwrite.has(name)) total += align(elementCount(shape));
  const packed = total > 0 ? be.zeros([total], 'float32') : null;
  const grads: Gradients = new Map(), owned: Tensor[] = packed ? [packed] : [];
  let at = 0;
  for (const [name, shape] of shapes) {
    const n = elementCount(shape);
    if (overwrite.has(name)) {
      const g = be.zeros(shape, 'float32');
      grads.set(name, g);
      owned.push(g);
    } else {
      grads.set(name, be.view(be.rowBlock(packed!, at, n), shape));
      at += align(n);
    }
  }
  return { grads, owned };
}

/** The forward pass and the output layer with cross entropy (its gradient dx when `grads` is given). */
function forwardAndLoss(graph: TrainingGraph, ids: Int32Array, batch: number, grads: Gradients | null, lossScale: number, overwrite: Set<string> | null = null) {
  const be = graph.backend, c = graph.config, p = graph.params, waitFree = waitFreeOps(be);
  const tape = graph.forward(ids, batch);
  const hostTargets = nextTokenTargets(ids, batch);
  const tableGrad = grads?.get(p.lmHead ? 'lmHead.weight' : 'wte.weight') ?? null;
  const common = { x: tape.hidden, table: p.lmHead ?? p.wte, logitScale: c.logitScale, lossScale, gradients: grads !== null, dTableInto: tableGrad };
  // With wait-free ops the targets go up without a wait and are checked and counted from the host copy.
  const ce = waitFree
    ? waitFree.crossEntropyWithOutput({
      ...common, targets: waitFree.uploadAsync(hostTargets, [ids.length]), hostTargets, overwriteDTable: overwrite?.has(p.lmHead ? 'lmHead.weight' : 'wte.weight') ?? false,
    })
    : be.crossEntropyWithOutput({ ...common, targets: be.upload(hostTargets, [ids.length], 'int32') });
  return { tape, ce };
}

/**
 * Propagate dHidden (the gradient of LN_f's output) down to the embeddings, adding into `grads`.
 * Each block's tape is released once its gradients are made, so the backward pass's memory shrinks
 * as it goes; the tape cannot be used again afterwards.
 */
export function backward(graph: TrainingGraph, tape: Tape, dHidden: Tensor, grads: Gradients, overwrite: Set<string> | null = null): void {
  const be = graph.backend, c = graph.config, p = graph.params;
  const waitFree = overwrite ? waitFreeOps(be) : null;
  if (overwrite && !waitFree) throw new Error('backward: overwriting stale gradients needs a backend with wait-free ops');
  /** linearBackwardInto, writing dWeight instead of adding when it is one of the stale gradients to overwrite. */
  const linearInto = (a: Parameters<typeof be.linearBackwardInto>[0], weightName: string): Tensor =>
    waitFree && overwrite!.has(weightName) ? waitFree.linearBackwardInto({ ...a, overwriteDWeight: true }) : be.linearBackwardInto(a);
  const { batch, seqLen: t } = tape;
  const d = c.dModel;
  const grad = (name: string): Tensor => grads.get(name)!;
  const biasGrad = (name: string, l: Affine): Tensor | null => (l.bias ? grad(`${name}.bias`) : null);
  /** LayerNorm backward's operands for dy at the norm `n` of x (named `name`): its gradients added into grads. */
  const normArgs = (dy: Tensor, x: Tensor, n: Affine, name: string) =>
    ({ dy, x, weight: n.weight, eps: c.layerNormEps, dWeight: grad(`${name}.weight`), dBias: biasGrad(name, n) });
  /** dx of LayerNorm, plus `residual` (the gradient that flows around the norm) when given. */
  const normBack = (dy: Tensor, x: Tensor, n: Affine, name: string, residual: Tensor | null = null): Tensor =>
    be.layerNormBackwardInto({ ...normArgs(dy, x, n, name), residual });
  const linearBack = (dy: Tensor, x: Tensor, l: Affine, name: string): Tensor =>
    linearInto({ dy, x, weight: l.weight, dWeight: grad(`${name}.weight`), dBias: biasGrad(name, l) }, `${name}.weight`);

  /**
   * From dOut (the gradient of attention's output) through attention, the QK LayerNorms and clip_qkv
   * to Wqkv: its weight gradient added into grads, and dLn1Out, the gradient of LN_1's output
   * (= dq·Wq + dk·Wk + dv·Wv).
   */
  const attentionAndQkvBackward = (a: Tape['blocks'][number], block: MptParams['blocks'][number], name: string, dAttended: Tensor): Tensor => {
    const args = graph.attentionArgs(a.q, a.k, a.v, batch, t);
    const attended = be.view(a.attended, [batch, t, d]), dOut = be.view(dAttended, [batch, t, d]), rows = batch * t, wqkv = `${name}.attn.wqkv`;
    const columns = graph.fusedQkvBackward ? graph.columnOutputs : null;
    if (columns && block.qLn && block.kLn && c.clipQkv === null) {
      // dQKV = [dq | dk | dv] side by side in one [rows, 3·d] tensor, written there by the q and k
      // LayerNorms' backward and by attention's dv; then dLn1Out = dQKV·Wqkv and Wqkv's gradient
      // dQKVᵀ·LN_1(xIn) are one GEMM each over the fused weight (its bias's gradient one column sum).
      const dQkv = columns.columnBlocks(rows, 3 * d);
      const g = columns.attentionBackward(args, attended, a.logSumExp, dOut, { dv: { tensor: dQkv, column: 2 * d } });
      columns.layerNormBackwardInto({ ...normArgs(be.view(g.dq, [rows, d]), a.qPre, block.qLn, `${name}.attn.qLn`), dxColumns: { tensor: dQkv, column: 0 } });
      columns.layerNormBackwardInto({ ...normArgs(be.view(g.dk!, [rows, d]), a.kPre, block.kLn, `${name}.attn.kLn`), dxColumns: { tensor: dQkv, column: d } });
      be.release(g.dq);
      be.release(g.dk!);
      const ln1Out = graph.norm(a.xIn, block.ln1);  // recomputed for the weight gradient
      const dLn1Out = linearBack(dQkv, ln1Out, block.wqkv, wqkv);
      be.release(dQkv);
      return dLn1Out;
    }
    // dq, dk, dv as tensors of their own, through the QK LayerNorms and clip_qkv's clamp; then
    // dLn1Out = dq·Wq + dk·Wk + dv·Wv summed in one tensor, each part's weight gradient in its row block
    // of Wqkv's: three GEMMs of each.
    const g = be.attentionBackward(args, attended, a.logSumExp, dOut);
    let dq = be.view(g.dq, [rows, d]), dk = be.view(g.dk, [rows, d]), dv = be.view(g.dv, [rows, d]);
    if (block.qLn) dq = normBack(dq, a.qPre, block.qLn, `${name}.attn.qLn`);
    if (block.kLn) dk = normBack(dk, a.kPre, block.kLn, `${name}.attn.kLn`);
    if (a.qkvRaw && c.clipQkv !== null) {
      dq = be.clampBackward(dq, a.qkvRaw.q, c.clipQkv);
      dk = be.clampBackward(dk, a.qkvRaw.k, c.clipQkv);
      dv = be.clampBackward(dv, a.qkvRaw.v, c.clipQkv);
    }
    const ln1Out = graph.norm(a.xIn, block.ln1);  // recomputed for the weight gradients
    let sum: Tensor | null = null;
    for (const [i, dy] of [dq, dk, dv].entries()) {
      const part = graph.qkvPart(block.wqkv, i);
      sum = linearInto({
        dy, x: ln1Out, weight: part.weight, dWeight: be.rowBlock(grad(`${wqkv}.weight`), i * d, d),
        dBias: part.bias ? be.rowBlock(grad(`${wqkv}.bias`), i * d, d) : null, dxInto: sum,
      }, `${wqkv}.weight`);
    }
    return sum!;
  };

  let dx = normBack(dHidden, tape.xFinal, p.lnF, 'lnF');
  for (let layer = c.nLayers - 1; layer >= 0; layer--) dx = be.scope(() => {
    // One scope a layer: its temporaries (activation gradients, recomputed activations) go back to the
    // device allocator before the next layer (CUDA; the CPU leaves them to the garbage collector).
    const a = tape.blocks[layer], block = p.blocks[layer], name = `blocks.${layer}`;
    // x = xMid + down(gelu(up(LN_2(xMid)))): LN_2's output from the tape, or recomputed here.
    const dActivated = linearBack(dx, a.activated, block.down, `${name}.mlp.down`);
    be.release(a.activated);
    const dUp = be.geluBackward(dActivated, a.up);
    be.release(a.up);
    be.release(dActivated);
    const ln2Out = a.ln2Out ?? graph.norm(a.xMid, block.ln2);
    const dLn2Out = linearBack(dUp, ln2Out, block.up, `${name}.mlp.up`);
    be.release(dUp);
    be.release(ln2Out);
    const dxMid = normBack(dLn2Out, a.xMid, block.ln2, `${name}.ln2`, dx);
    // xMid = xIn + out(attention(q_LN(q), k_LN(k), v)),  q,k,v = clip(LN_1(xIn) · W{q,k,v}ᵀ)
    const dAttended = linearBack(dxMid, a.attended, block.out, `${name}.attn.out`);
    const dLn1Out = attentionAndQkvBackward(a, block, name, dAttended);
    const dxIn = normBack(dLn1Out, a.xIn, block.ln1, `${name}.ln1`, dxMid);
    // This block's tape is spent (xIn is the previous block's output, which its own backward does not read).
    // (ln2Out, up and activated went back above, as soon as their gradients were made.)
    for (const tensor of new Set([a.xIn, a.qPre, a.kPre, a.q, a.k, a.v, a.attended, a.logSumExp, a.xMid])) be.release(tensor);
    if (a.qkvRaw) for (const tensor of Object.values(a.qkvRaw)) be.release(tensor);
    return dxIn;
  });
  // MosaicGPT's embedding_fraction: (wte + wpe)·f + (wte + wpe).detach()·(1-f) lets only f of the gradient through.
  be.embeddingBackwardInto(grads.get('wte.weight')!, tape.ids, dx, c.embeddingFraction);
  if (tape.positions && p.wpe) be.embeddingBackwardInto(grads.get('wpe.weight')!, tape.positions, dx, c.embeddingFraction);
}
