import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { trainingBackend, type Tensor } from '../src/backend/backend.js';
import { parameterShapes, type MptConfig } from '../src/model/config.js';
import { lossAndGradients, zeroGradients } from '../src/model/backward.js';
import { structureParams } from '../src/model/params.js';
import { TrainingGraph } from '../src/model/training-forward.js';
import { Rng } from '../src/util/random.js';

/**
 * Finite-difference checks of every backward op on small random shapes of awkward sizes: each op's
 * analytic gradient of L = Σ r·y (r random) against (L(x + h) − L(x − h)) / 2h at sampled elements,
 * then the whole model with every option the family has (biases, learned positions, clip_qkv,
 * logit scale, embedding fraction) the same way.
 */
const be = trainingBackend(new CpuBackend({ threads: 2 }));
const rng = new Rng(1234);
const randn = (n: number, scale = 1) => Float32Array.from({ length: n }, () => rng.normal() * scale);
const up = (data: Float32Array, shape: number[]) => be.upload(data, shape, 'float32');
const values = (t: Tensor) => be.download(t) as Float32Array;
const H = 3e-3;

/** The weighted sum Σ r·y in float64, the scalar every check differentiates. */
const dot = (y: Float32Array, r: Float32Array) => y.reduce((s, v, i) => s + v * r[i], 0);

/**
 * Check `analytic` (dL/dinput) for `input` by central differences of `loss()` at up to 12 elements.
 * Tolerance: 2% of the value plus 2e-3 absolute (float32 forward, h = 3e-3); a wrong gradient is off by O(1).
 */
function checkGradient(what: string, input: Float32Array, analytic: Float32Array, loss: () => number): void {
  assert.equal(analytic.length, input.length, `${what}: gradient has ${analytic.length} elements for ${input.length}`);
  const picks = new Set<number>();
  while (picks.size < Math.min(12, input.length)) picks.add(rng.nextUint32() % input.length);
  for (const i of picks) {
    const saved = input[i];
    input[i] = saved + H;
    const plus = loss();
    input[i] = saved - H;
    const minus = loss();
    input[i] = saved;
    const numeric = (plus - minus) / (2 * H);
    assert.ok(Math.abs(numeric - analytic[i]) <= 2e-2 * Math.abs(numeric) + 2e-3, `${what}[${i}]: analytic ${analytic[i]}, numeric ${numeric}`);
  }
}

test('linear backward (with bias) into zeroed gradients', () => {
  const rows = 5, inW = 7, outW = 6;
  const x = randn(rows * inW), w = randn(outW * inW), b = randn(outW), r = randn(rows * outW);
  const loss = () => dot(values(be.linear(up(x, [rows, inW]), up(w, [outW, inW]), up(b, [outW]))), r);
  const dW = be.zeros([outW, inW], 'float32'), dB = be.zeros([outW], 'float32');
  const dx = be.linearBackwardInto({ dy: up(r, [rows, outW]), x: up(x, [rows, inW]), weight: up(w, [outW, inW]), dWeight: dW, dBias: dB });
  checkGradient('dx', x, values(dx), loss);
  checkGradient('dW', w, values(dW), loss);
  checkGradient('db', b, values(dB), loss);
});

test('layer norm backward (weight and bias) into zeroed gradients', () => {
  const rows = 3, n = 11;
  const x = randn(rows * n), w = randn(n), b = randn(n), r = randn(rows * n);
  const loss = () => dot(values(be.layerNorm(up(x, [rows, n]), up(w, [n]), up(b, [n]), 1e-5)), r);
  const dW = be.zeros([n], 'float32'), dB = be.zeros([n], 'float32');
  const dx = be.layerNormBackwardInto({ dy: up(r, [rows, n]), x: up(x, [rows, n]), weight: up(w, [n]), eps: 1e-5, dWeight: dW, dBias: dB });
  checkGradient('dx', x, values(dx), loss);
  checkGradient('dw', w, values(dW), loss);
  checkGradient('db', b, values(dB), loss);
});

test('accumulating linear backward over row blocks of one weight, and linear with its residual add', () => {
  // y = x · Wᵀ + b with W [3·o, i] used as three row blocks, as the model uses Wqkv: the gradients of
  // Σ r_p · y_p over the parts p must land in W's row blocks and sum in one dx (dxInto), on top of
  // what the accumulators already hold.
  const rows = 5, inW = 7, o = 3;
  const x = randn(rows * inW), w = randn(3 * o * inW), b = randn(3 * o), rs = [0, 1, 2].map(() => randn(rows * o));
  const prior = randn(3 * o * inW), priorB = randn(3 * o);
  const dW = up(Float32Array.from(prior), [3 * o, inW]), dB = up(Float32Array.from(priorB), [3 * o]);
  const loss = () => rs.reduce((s, r, p) => s + dot(values(be.linear(up(x, [rows, inW]), be.rowBlock(up(w, [3 * o, inW]), p * o, o),
    be.rowBlock(up(b, [3 * o]), p * o, o))), r), 0);
  let dx: Tensor | null = null;
  const wt = up(w, [3 * o, inW]), xt = up(x, [rows, inW]);
  rs.forEach((r, p) => {
    dx = be.linearBackwardInto({ dy: up(r, [rows, o]), x: xt, weight: be.rowBlock(wt, p * o, o), dWeight: be.rowBlock(dW, p * o, o), dBias: be.rowBlock(dB, p * o, o), dxInto: dx });
  });
  checkGradient('dx', x, values(dx!), loss);
  checkGradient('dW', w, values(dW).map((v, i) => v - prior[i]), loss);
  checkGradient('db', b, values(dB).map((v, i) => v - priorB[i]), loss);
  // linearResidual is residual + linear: its gradients are the residual's identity and linear's.
  const res = randn(rows * 3 * o), rr = randn(rows * 3 * o);
  const lossR = () => dot(values(be.linearResidual(up(x, [rows, inW]), up(w, [3 * o, inW]), up(b, [3 * o]), up(res, [rows, 3 * o]))), rr);
  checkGradient('residual', res, rr, lossR);
  const dWR = be.zeros([3 * o, inW], 'float32');
  const dxR = be.linearBackwardInto({ dy: up(rr, [rows, 3 * o]), x: up(x, [rows, inW]), weight: up(w, [3 * o, inW]), dWeight: dWR, dBias: null });
  checkGradient('linearResidual dx', x, values(dxR), lossR);
  checkGradient('linearResidual dW', w, values(dWR), lossR);
});

test('accumulating layer norm backward with the residual gradient added', () => {
  const rows = 3, n = 11;
  const x = randn(rows * n), w = randn(n), b = randn(n), r = randn(rows * n), res = randn(rows * n);
  const prior = randn(n), priorB = randn(n);
  const dW = up(Float32Array.from(prior), [n]), dB = up(Float32Array.from(priorB), [n]);
  // L = Σ r·LN(x) + Σ res·x: the residual stream's gradient res flows around the norm into dx.
  const loss = () => dot(values(be.layerNorm(up(x, [rows, n]), up(w, [n]), up(b, [n]), 1e-5)), r) + dot(x, res);
  const dx = be.layerNormBackwardInto({ dy: up(r, [rows, n]), x: up(x, [rows, n]), weight: up(w, [n]), eps: 1e-5, dWeight: dW, dBias: dB, residual: up(res, [rows, n]) });
  checkGradient('dx', x, values(dx), loss);
  checkGradient('dw', w, values(dW).map((v, i) => v - prior[i]), loss);
  checkGradient('db', b, values(dB).map((v, i) => v - priorB[i]), loss);
});

test('GELU and clamp backward', () => {
  const x = randn(40, 2), r = randn(40);
  checkGradient('gelu', x, values(be.geluBackward(up(r, [40]), up(x, [40]))), () => dot(values(be.gelu(up(x, [40]))), r));
  // Keep elements away from the clamp's corners, where the function has no derivative.
  const c = Float32Array.from(randn(40, 2), (v) => (Math.abs(Math.abs(v) - 1.5) < 0.05 ? v + 0.2 : v));
  checkGradient('clamp', c, values(be.clampBackward(up(r, [40]), up(c, [40]), 1.5)), () => dot(values(be.clamp(up(c, [40]), 1.5)), r));
});

test('embedding backward', () => {
  const vocab = 6, d = 5, ids = Int32Array.of(1, 4, 1, 0, 5);
  const table = randn(vocab * d), re = randn(ids.length * d);
  const grad = be.zeros([vocab, d], 'float32');
  be.embeddingBackwardInto(grad, be.upload(ids, [ids.length], 'int32'), up(re, [ids.length, d]), 1);
  checkGradient('embedding', table, values(grad), () => dot(values(be.embedding(be.upload(ids, [ids.length], 'int32'), up(table, [vocab, d]))), re));
});

test('attention backward with ALiBi, and its forward agrees with the inference kernel', () => {
  const batch = 2, t = 5, nHeads = 3, dHead = 4, d = nHeads * dHead;
  const q = randn(batch * t * d), k = randn(batch * t * d), v = randn(batch * t * d), r = randn(batch * t * d);
  const slopes = Float32Array.of(0.5, 0.25, 0.125);
  const args = () => ({
    q: up(q, [batch, t, d]), k: up(k, [batch, t, d]), v: up(v, [batch, t, d]), kvLen: t, nHeads,
    scale: 1 / Math.sqrt(dHead), alibiSlopes: slopes, keyMask: null,
  });
  const trained = be.attentionForTraining(args());
  const inference = values(be.attention(args()));
  values(trained.out).forEach((o, i) => assert.ok(Math.abs(o - inference[i]) <= 1e-6, `out[${i}] ${o} vs ${inference[i]}`));
  const loss = () => dot(values(be.attentionForTraining(args()).out), r);
  const g = be.attentionBackward(args(), trained.out, trained.logSumExp, up(r, [batch, t, d]));
  checkGradient('dq', q, values(g.dq), loss);
  checkGradient('dk', k, values(g.dk), loss);
  checkGradient('dv', v, values(g.dv), loss);
});

test('output layer fused with cross entropy: loss, dx and dTable, logit scale, ignored rows', () => {
  const n = 7, d = 5, vocab = 13;
  const x = randn(n * d), table = randn(vocab * d, 0.5);
  const targets = Int32Array.of(3, 0, 12, -1, 7, 7, 1);
  const run = (gradients: boolean) => be.crossEntropyWithOutput({
    x: up(x, [n, d]), table: up(table, [vocab, d]), targets: be.upload(targets, [n], 'int32'), logitScale: 0.7, lossScale: 1 / 6, gradients,
  });
  // The loss against a direct computation from the logits.
  const logits = values(be.linear(up(x, [n, d]), up(table, [vocab, d]), null));
  let expected = 0;
  targets.forEach((target, row) => {
    if (target < 0) return;
    const z = Array.from(logits.subarray(row * vocab, (row + 1) * vocab), (v) => v * 0.7);
    const max = Math.max(...z);
    expected += max + Math.log(z.reduce((s, v) => s + Math.exp(v - max), 0)) - z[target];
  });
  const r = run(true);
  assert.equal(r.count, 6);
  assert.ok(Math.abs(values(r.lossSum)[0] - expected) <= 1e-5 * expected, `loss ${values(r.lossSum)[0]} vs ${expected}`);
  const loss = () => values(run(false).lossSum)[0] / 6;
  checkGradient('dx', x, values(r.dx!), loss);
  checkGradient('dTable', table, values(r.dTable!), loss);
  const ignoredRow = values(r.dx!).subarray(3 * d, 4 * d);
  assert.ok(ignoredRow.every((v) => v === 0), 'an ignored row must get no gradient');
});

test('the whole model: biases, learned positions, clip_qkv, logit scale, embedding fraction', () => {
  const config: MptConfig = {
    dModel: 8, nHeads: 2, nLayers: 2, expansionRatio: 2, maxSeqLen: 8, vocabSize: 11, alibi: false, alibiBiasMax: 8,
    alibiSlopes: 'plain', learnedPosEmb: true, qkLn: true, clipQkv: 2.5, softmaxScale: null, noBias: false,
    logitScale: 0.8, layerNormEps: 1e-5, tieWordEmbeddings: true, embeddingFraction: 0.5,
  };
  const host = new Map<string, Float32Array>();
  const tensors = new Map<string, Tensor>();
  for (const [name, shape] of parameterShapes(config)) {
    const data = randn(shape.reduce((a, b) => a * b, 1), name.endsWith('.weight') && shape.length === 2 ? 0.5 : 0.3);
    if (/ln|Ln/.test(name) && name.endsWith('.weight')) data.forEach((v, i) => (data[i] = 1 + v));
    host.set(name, data);
    tensors.set(name, be.upload(data, shape, 'float32'));
  }
  const lossOf = (c: MptConfig) => () => {
    const fresh = new Map<string, Tensor>();
    for (const [name, shape] of parameterShapes(c)) fresh.set(name, be.upload(host.get(name)!, shape, 'float32'));
    const r = lossAndGradients(new TrainingGraph(c, be, structureParams(c, fresh)), ids, 2, null, 1);
    return r.lossSum / r.count;
  };
  const gradientsOf = (c: MptConfig) => {
    const grads = zeroGradients(c, be);
    lossAndGradients(new TrainingGraph(c, be, structureParams(c, tensors)), ids, 2, grads, 1 / 10);
    return grads;
  };
  const ids = Int32Array.of(3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8);
  // embedding_fraction changes the gradient, not the loss, so the embeddings are checked
  // numerically at f = 1 and the f = 0.5 run must give exactly half of wpe's (input-only) gradient.
  const full = { ...config, embeddingFraction: 1 };
  const grads = gradientsOf(config), fullGrads = gradientsOf(full);
  for (const [name] of parameterShapes(config)) {
    const g = name === 'wte.weight' || name === 'wpe.weight' ? fullGrads : grads;
    checkGradient(name, host.get(name)!, values(g.get(name)!), lossOf(config));
  }
  const half = values(grads.get('wpe.weight')!), whole = values(fullGrads.get('wpe.weight')!);
  whole.forEach((v, i) => assert.ok(Math.abs(half[i] - 0.5 * v) <= 1e-7 + 1e-6 * Math.abs(v), `wpe[${i}] at f = 0.5: ${half[i]} vs ${0.5 * v}`));
});
