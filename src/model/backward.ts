import type { Backend, Tensor } from '../backend/backend.js';
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
  const be = graph.backend, c = graph.config, p = graph.params;
  const tape = graph.forward(ids, batch);
  const targets = be.upload(nextTokenTargets(ids, batch), [ids.length], 'int32');
  const ce = be.crossEntropyWithOutput({
    x: tape.hidden, table: p.lmHead ?? p.wte, targets, logitScale: c.logitScale, lossScale, gradients: grads !== null,
  });
  const lossSum = (be.download(ce.lossSum) as Float32Array)[0];
  if (grads) {
    be.addInto(grads.get(p.lmHead ? 'lmHead.weight' : 'wte.weight')!, ce.dTable!, 1);
    backward(graph, tape, ce.dx!, grads);
  }
  return { lossSum, count: ce.count };
}

/** Propagate dHidden (the gradient of LN_f's output) down to the embeddings, adding into `grads`. */
export function backward(graph: TrainingGraph, tape: Tape, dHidden: Tensor, grads: Gradients): void {
  const be = graph.backend, c = graph.config, p = graph.params;
  const { batch, seqLen: t } = tape;
  const d = c.dModel;
  const add = (name: string, g: Tensor | null) => { if (g) be.addInto(grads.get(name)!, g, 1); };
  const normBack = (dy: Tensor, x: Tensor, n: Affine, name: string): Tensor => {
    const g = be.layerNormBackward(dy, x, n.weight, c.layerNormEps, n.bias !== null);
    add(`${name}.weight`, g.dWeight);
    add(`${name}.bias`, g.dBias);
    return g.dx;
  };
  const linearBack = (dy: Tensor, x: Tensor, l: Affine, name: string): Tensor => {
    const g = be.linearBackward(dy, x, l.weight, l.bias !== null);
    add(`${name}.weight`, g.dWeight);
    add(`${name}.bias`, g.dBias);
    return g.dx;
  };

  let dx = normBack(dHidden, tape.xFinal, p.lnF, 'lnF');
  for (let layer = c.nLayers - 1; layer >= 0; layer--) dx = be.scope(() => {
    // One scope a layer: its temporaries (activation gradients, per-call weight gradients) go back to
    // the device allocator before the next layer (CUDA; the CPU leaves them to the garbage collector).
    const a = tape.blocks[layer], block = p.blocks[layer], name = `blocks.${layer}`;
    // x = xMid + down(gelu(up(LN_2(xMid))))
    const dActivated = linearBack(dx, a.activated, block.down, `${name}.mlp.down`);
    const dUp = be.geluBackward(dActivated, a.up);
    const dLn2Out = linearBack(dUp, a.ln2Out, block.up, `${name}.mlp.up`);
    const dxMid = be.add(dx, normBack(dLn2Out, a.xMid, block.ln2, `${name}.ln2`));
    // xMid = xIn + out(attention(q_LN(q), k_LN(k), v)),  q,k,v = clip(LN_1(xIn) · Wqkvᵀ)
    const dAttended = linearBack(dxMid, a.attended, block.out, `${name}.attn.out`);
    const args = graph.attentionArgs(a.q, a.k, a.v, batch, t);
    const g = be.attentionBackward(args, be.view(a.attended, [batch, t, d]), a.logSumExp, be.view(dAttended, [batch, t, d]));
    let dq = be.view(g.dq, [batch * t, d]), dk = be.view(g.dk, [batch * t, d]);
    if (block.qLn && block.kLn) {
      dq = normBack(dq, a.qPre, block.qLn, `${name}.attn.qLn`);
      dk = normBack(dk, a.kPre, block.kLn, `${name}.attn.kLn`);
    }
    let dQkv = be.zeros([batch * t, 3 * d], 'float32');
    be.addColumnsInto(dQkv, dq, 0);
    be.addColumnsInto(dQkv, dk, d);
    be.addColumnsInto(dQkv, be.view(g.dv, [batch * t, d]), 2 * d);
    if (a.qkvRaw && c.clipQkv !== null) dQkv = be.clampBackward(dQkv, a.qkvRaw, c.clipQkv);
    const dLn1Out = linearBack(dQkv, a.ln1Out, block.wqkv, `${name}.attn.wqkv`);
    return be.add(dxMid, normBack(dLn1Out, a.xIn, block.ln1, `${name}.ln1`));
  });
  // MosaicGPT's embedding_fraction: (wte + wpe)·f + (wte + wpe).detach()·(1-f) lets only f of the gradient through.
  be.embeddingBackwardInto(grads.get('wte.weight')!, tape.ids, dx, c.embeddingFraction);
  if (tape.positions && p.wpe) be.embeddingBackwardInto(grads.get('wpe.weight')!, tape.positions, dx, c.embeddingFraction);
}
