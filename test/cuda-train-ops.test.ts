// Every CUDA training op against the CPU backend's (the reference) on fresh random inputs of awkward
// sizes, in bfloat16 and float32: attention forward (with its log-sum-exp) and backward on both the
// tensor-core and the scalar kernels, linear, LayerNorm, GELU and clamp backward, the fused output
// layer with cross entropy (several row blocks), the embedding scatter-add, gradient accumulation,
// scaling, the sum of squares and AdamW with its bf16 compute copy. Skipped where no GPU is usable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CudaBackend } from '../src/backend/cuda/index.js';
import type { CudaTensor } from '../src/backend/cuda/tensor.js';
import { elementCount, trainingBackend, type AttentionArgs, type Backend, type Tensor, type TrainingBackend } from '../src/backend/backend.js';
import { FLASH_FORWARD_SHAPES } from '../src/backend/cuda/flash.js';
import { geluTableInputBits } from '../src/backend/cuda/gelu-table.js';
import { gemmTuning, tuningLog } from '../src/backend/cuda/cublaslt-api.js';
import { alibiSlopesFor, asStored, close as closeTo, columnBlock, cpu, cudaFor, down, GELU_TABLE_TEST_SHAPES, pair, randn, rng, sameBits, skip } from './cuda-harness.js';

// Training outputs may hold infinities where the reference does (a fully masked row's log-sum-exp).
const close = (what: string, got: ArrayLike<number>, want: ArrayLike<number>, tolerance: number) => closeTo(what, got, want, tolerance, true);
const f32pair = (be: CudaBackend, x: Float32Array, shape: number[]): [Tensor, Tensor] => [be.upload(x, shape, 'float32'), cpu.upload(Float32Array.from(x), shape, 'float32')];
// bf16 outputs carry 8 bits of mantissa; gradients made from bf16 products carry their rounding too.
const tol = (dtype: string, fp32: number, bf16 = 1e-2) => (dtype === 'bfloat16' ? bf16 : fp32);

// The LayerNorm backward's row kernels the twin test runs: the ring at its default shape (lnRing: teams of
// ≤ 128 threads), the ring at teams of ≤ 256 (1024 threads an SM: the shape it first ran in), and the teams
// kernel. (The ring's teams of 64 or 32 threads ran in layernorm-ab.ts only: not listed.)
const LN_ROW_KERNELS: Array<{ kernel: 'ring' | 'teams'; ring: Record<string, number> }> = [
  { kernel: 'ring', ring: {} }, { kernel: 'ring', ring: { teamMax: 256, threadsPerSM: 1024 } }, { kernel: 'teams', ring: {} },
];

for (const dtype of ['bfloat16', 'float32'] as const) {
  // Head sizes 32 and 128 take the tensor-core kernels in bf16; 24 always the scalar ones. Sizes that are
  // not multiples of the tiles (64 and 128 rows), a whole 2048-token sequence, batch > 1, and learned-
  // position models (no ALiBi).
  const attentionCases: Array<[number, number, number, number, boolean]> = [
    [2, 77, 3, 32, true], [1, 150, 2, 128, true], [2, 45, 2, 24, true], [2, 130, 2, 128, true], [2, 130, 2, 128, false], [1, 2048, 2, 128, true],
  ];
  for (const [batch, t, heads, dHead, alibi] of attentionCases) {
    test(`cuda ${dtype}: attention for training and its backward, ${batch}×${t} tokens, ${heads} heads of ${dHead}${alibi ? '' : ', no ALiBi'}`, { skip }, () => {
      const be = cudaFor(dtype), g = trainingBackend(be), d = heads * dHead;
      const slopes = alibi ? alibiSlopesFor(heads) : null;
      const [qg, qc] = pair(be, randn(batch * t * d), [batch, t, d]);
      const [kg, kc] = pair(be, randn(batch * t * d), [batch, t, d]);
      const [vg, vc] = pair(be, randn(batch * t * d), [batch, t, d]);
      const [dg, dc] = pair(be, randn(batch * t * d), [batch, t, d]);
      const args = (q: Tensor, k: Tensor, v: Tensor): AttentionArgs => ({ q, k, v, kvLen: t, nHeads: heads, scale: 1 / Math.sqrt(dHead), alibiSlopes: slopes, keyMask: null });
      const fg = g.attentionForTraining(args(qg, kg, vg)), fc = cpu.attentionForTraining(args(qc, kc, vc));
      close('out', down(be, fg.out), down(cpu, fc.out), tol(dtype, 1e-5));
      close('logSumExp', down(be, fg.logSumExp), down(cpu, fc.logSumExp), 1e-5);
      const bg = g.attentionBackward(args(qg, kg, vg), fg.out, fg.logSumExp, dg);
      const bc = cpu.attentionBackward(args(qc, kc, vc), fc.out, fc.logSumExp, dc);
      for (const name of ['dq', 'dk', 'dv'] as const) close(name, down(be, bg[name]), down(cpu, bc[name]), tol(dtype, 1e-5, 2e-2));
    });
  }

  // Every compile-time shape of the tensor-core kernels (flash.ts), not only the defaults: 32-row
  // warps with Q in shared memory, 8-warp blocks, 32-key tiles, backward chunks of 16, 32 and 64 keys.
  if (dtype === 'bfloat16') {
    test('cuda bfloat16: every flash forward shape, backward chunk and dq mode matches the CPU, with and without ALiBi', { skip }, () => {
      const be = cudaFor(dtype), g = trainingBackend(be), ops = be.training;
      const batch = 2, t = 203, heads = 2, dHead = 128, d = heads * dHead;
      const [qg, qc] = pair(be, randn(batch * t * d), [batch, t, d]);
      const [kg, kc] = pair(be, randn(batch * t * d), [batch, t, d]);
      const [vg, vc] = pair(be, randn(batch * t * d), [batch, t, d]);
      const [dg, dc] = pair(be, randn(batch * t * d), [batch, t, d]);
      const saved = { shape: ops.flashShape, chunk: ops.flashBackwardChunk, stored: ops.flashBackwardStoredDs };
      try {
        for (const alibi of [true, false]) {
          const slopes = alibi ? alibiSlopesFor(heads) : null;
          const args = (q: Tensor, k: Tensor, v: Tensor): AttentionArgs => ({ q, k, v, kvLen: t, nHeads: heads, scale: 1 / Math.sqrt(dHead), alibiSlopes: slopes, keyMask: null });
          const fc = cpu.attentionForTraining(args(qc, kc, vc));
          const bc = cpu.attentionBackward(args(qc, kc, vc), fc.out, fc.logSumExp, dc);
          for (const shape of FLASH_FORWARD_SHAPES) {
            ops.flashShape = shape;
            const fg = g.attentionForTraining(args(qg, kg, vg));
            const what = `${JSON.stringify(shape)}${alibi ? '' : ', no ALiBi'}`;
            close(`out ${what}`, down(be, fg.out), down(cpu, fc.out), 1e-2);
            close(`logSumExp ${what}`, down(be, fg.logSumExp), down(cpu, fc.logSumExp), 1e-5);
          }
          ops.flashShape = saved.shape;
          const fg = g.attentionForTraining(args(qg, kg, vg));
          for (const stored of [false, true]) {
            for (const chunk of [16, 32, 64]) {
              ops.flashBackwardChunk = chunk;
              ops.flashBackwardStoredDs = stored;
              const bg = g.attentionBackward(args(qg, kg, vg), fg.out, fg.logSumExp, dg);
              const what = `chunk ${chunk}, dq ${stored ? 'from stored ds' : 'recomputed'}${alibi ? '' : ', no ALiBi'}`;
              for (const name of ['dq', 'dk', 'dv'] as const) close(`${name}, ${what}`, down(be, bg[name]), down(cpu, bc[name]), 2e-2);
            }
          }
        }
      } finally {
        ops.flashShape = saved.shape;
        ops.flashBackwardChunk = saved.chunk;
        ops.flashBackwardStoredDs = saved.stored;
      }
    });
  }

  test(`cuda ${dtype}: attention with a key mask takes the scalar kernels and leaves masked keys out`, { skip }, () => {
    const be = cudaFor(dtype), g = trainingBackend(be);
    const batch = 2, t = 40, heads = 2, dHead = 32, d = heads * dHead;
    const [qg, qc] = pair(be, randn(batch * t * d), [batch, t, d]);
    const [kg, kc] = pair(be, randn(batch * t * d), [batch, t, d]);
    const [vg, vc] = pair(be, randn(batch * t * d), [batch, t, d]);
    const [dg, dc] = pair(be, randn(batch * t * d), [batch, t, d]);
    const mask = Int32Array.from({ length: batch * t }, (_, i) => (i % 7 === 3 ? 0 : 1));
    const mk = (b: Backend, q: Tensor, k: Tensor, v: Tensor): AttentionArgs => ({ q, k, v, kvLen: t, nHeads: heads, scale: 0.2, alibiSlopes: null, keyMask: b.upload(mask, [batch, t], 'int32') });
    const ag = mk(be, qg, kg, vg), ac = mk(cpu, qc, kc, vc);
    const fg = g.attentionForTraining(ag), fc = cpu.attentionForTraining(ac);
    close('masked out', down(be, fg.out), down(cpu, fc.out), tol(dtype, 1e-5));
    const bg = g.attentionBackward(ag, fg.out, fg.logSumExp, dg), bc = cpu.attentionBackward(ac, fc.out, fc.logSumExp, dc);
    for (const name of ['dq', 'dk', 'dv'] as const) close(`masked ${name}`, down(be, bg[name]), down(cpu, bc[name]), tol(dtype, 1e-5, 2e-2));
  });

  test(`cuda ${dtype}: linear, LayerNorm, GELU and clamp backward`, { skip }, () => {
    const be = cudaFor(dtype), g = trainingBackend(be);
    const rows = 37, inF = 133, outF = 71;
    const [dyg, dyc] = pair(be, randn(rows * outF), [rows, outF]);
    const [xg, xc] = pair(be, randn(rows * inF), [rows, inF]);
    const [wg, wc] = pair(be, randn(outF * inF, 0.1), [outF, inF]);
    const zeroed = (shape: number[]) => [be.zeros(shape, 'float32'), cpu.zeros(shape, 'float32')];
    const [lwg, lwc] = zeroed([outF, inF]), [lbg, lbc] = zeroed([outF]);
    const ldg = g.linearBackwardInto({ dy: dyg, x: xg, weight: wg, dWeight: lwg, dBias: lbg });
    const ldc = cpu.linearBackwardInto({ dy: dyc, x: xc, weight: wc, dWeight: lwc, dBias: lbc });
    close('linear dx', down(be, ldg), down(cpu, ldc), tol(dtype, 1e-5));
    close('linear dWeight', down(be, lwg), down(cpu, lwc), tol(dtype, 1e-5, 3e-3));
    close('linear dBias', down(be, lbg), down(cpu, lbc), tol(dtype, 1e-5, 3e-3));
    for (const n of [1003, 64]) {
      const r = 29;
      const [dy2g, dy2c] = pair(be, randn(r * n), [r, n]);
      const [x2g, x2c] = pair(be, randn(r * n, 2), [r, n]);
      const [w2g, w2c] = pair(be, Float32Array.from(randn(n, 0.3), (v) => 1 + v), [n]);
      for (const withBias of [true, false]) {
        const [nwg, nwc] = zeroed([n]), [nbg, nbc] = zeroed([n]);
        const ndg = g.layerNormBackwardInto({ dy: dy2g, x: x2g, weight: w2g, eps: 1e-5, dWeight: nwg, dBias: withBias ? nbg : null });
        const ndc = cpu.layerNormBackwardInto({ dy: dy2c, x: x2c, weight: w2c, eps: 1e-5, dWeight: nwc, dBias: withBias ? nbc : null });
        close(`layerNorm dx (width ${n})`, down(be, ndg), down(cpu, ndc), tol(dtype, 1e-5));
        close(`layerNorm dWeight (width ${n})`, down(be, nwg), down(cpu, nwc), tol(dtype, 1e-5, 3e-3));
        if (withBias) close(`layerNorm dBias (width ${n})`, down(be, nbg), down(cpu, nbc), tol(dtype, 1e-5, 3e-3));
        else assert.deepEqual(down(be, nbg), new Float32Array(n), 'no bias: its accumulator untouched');
      }
    }
    const n = 29 * 1003;
    const [ag, ac] = pair(be, randn(n, 2), [29, 1003]);
    const [bg, bc] = pair(be, randn(n), [29, 1003]);
    close('gelu backward', down(be, g.geluBackward(bg, ag)), down(cpu, cpu.geluBackward(bc, ac)), tol(dtype, 1e-6));
    close('clamp backward', down(be, g.clampBackward(bg, ag, 1.3)), down(cpu, cpu.clampBackward(bc, ac, 1.3)), 0);
  });

  if (dtype === 'bfloat16') test('cuda bfloat16: GELU backward through the table (gelu_backward_table8) gives gelu_backward8\'s bits for every bf16 x', { skip }, () => {
    const be = cudaFor(dtype), g = be.training;
    const saved = [be.geluTable, be.geluTableShape] as const;
    try {
      // The table's float GELU'(x) against gelu_backward8 in float32 with dy = 1 (its product is then
      // exactly the factor): every entry, bit for bit, before any bf16 rounding could hide a last bit.
      const inputs = geluTableInputBits();
      const f32 = cudaFor('float32');
      const xs = f32.upload(new Float32Array(Uint32Array.from(inputs, (h) => h << 16).buffer), [inputs.length], 'float32');
      const ones = f32.upload(new Float32Array(inputs.length).fill(1), [inputs.length], 'float32');
      sameBits('the table of GELU\' against gelu_backward8 (float32, dy = 1)', down(be, g.geluSlopeTable()), down(f32, f32.training.geluBackward(ones, xs)));
      // Every bf16 x (65,536 patterns) with random dy, then a random pair whose vector count is no
      // multiple of a turn's, at several launch shapes.
      const n = 65536, all = be.upload(Uint16Array.from({ length: n }, (_, i) => i), [n], 'bfloat16');
      const dyAll = be.upload(randn(n, 3), [n], 'bfloat16');
      const [xg, xc] = pair(be, randn(8 * 1001, 2), [8 * 1001]);
      const [dg, dc] = pair(be, randn(8 * 1001), [8 * 1001]);
      be.geluTable = false;
      const want = [down(be, g.geluBackward(dyAll, all)), down(be, g.geluBackward(dg, xg))];
      be.geluTable = true;
      for (const shape of GELU_TABLE_TEST_SHAPES) {
        be.geluTableShape = shape;
        const label = JSON.stringify(shape);
        sameBits(`gelu_backward_table8 over all bf16 x, ${label}`, down(be, g.geluBackward(dyAll, all)), want[0]);
        const got = down(be, g.geluBackward(dg, xg));
        sameBits(`gelu_backward_table8 over 8008 random pairs, ${label}`, got, want[1]);
        close(`gelu_backward_table8 against the CPU, ${label}`, got, down(cpu, cpu.geluBackward(dc, xc)), tol(dtype, 1e-6));
      }
    } finally {
      [be.geluTable, be.geluTableShape] = saved;
    }
  });

  test(`cuda ${dtype}: accumulating linear backward over a weight's row blocks, and linear with its residual`, { skip }, () => {
    const be = cudaFor(dtype), g = trainingBackend(be);
    const rows = 45, inF = 136, o = 40; // a weight [3·o, inF] used as three row blocks, as the model uses Wqkv
    const [xg, xc] = pair(be, randn(rows * inF), [rows, inF]);
    const [wg, wc] = pair(be, randn(3 * o * inF, 0.1), [3 * o, inF]);
    const prior = randn(3 * o * inF), priorB = randn(3 * o);
    const [dWg, dWc] = f32pair(be, prior, [3 * o, inF]);
    const [dBg, dBc] = f32pair(be, priorB, [3 * o]);
    const dys = [0, 1, 2].map(() => pair(be, randn(rows * o), [rows, o]));
    let dxg: Tensor | null = null, dxc: Tensor | null = null;
    dys.forEach(([dyg, dyc], p) => {
      dxg = g.linearBackwardInto({ dy: dyg, x: xg, weight: g.rowBlock(wg, p * o, o), dWeight: g.rowBlock(dWg, p * o, o), dBias: g.rowBlock(dBg, p * o, o), dxInto: dxg });
      dxc = cpu.linearBackwardInto({ dy: dyc, x: xc, weight: cpu.rowBlock(wc, p * o, o), dWeight: cpu.rowBlock(dWc, p * o, o), dBias: cpu.rowBlock(dBc, p * o, o), dxInto: dxc });
    });
    close('dx summed over the row blocks', down(be, dxg!), down(cpu, dxc!), tol(dtype, 1e-5));
    close('dWeight accumulated', down(be, dWg), down(cpu, dWc), tol(dtype, 1e-6, 1e-3));
    close('dBias accumulated', down(be, dBg), down(cpu, dBc), tol(dtype, 1e-6, 1e-3));
    for (const r of [7, 45]) { // 7 rows: the few-row GEMM path
      const [x2g, x2c] = pair(be, randn(r * inF), [r, inF]);
      const [resg, resc] = pair(be, randn(r * 3 * o), [r, 3 * o]);
      const [bg, bc] = pair(be, randn(3 * o), [3 * o]);
      close(`linearResidual (${r} rows)`, down(be, g.linearResidual(x2g, wg, bg, resg)), down(cpu, cpu.linearResidual(x2c, wc, bc, resc)), tol(dtype, 1e-6));
    }
  });

  test(`cuda ${dtype}: a weight's row blocks in one strided-batched GEMM (q, k, v; Wqkv's gradient), tuned on first use`, { skip }, () => {
    const be = cudaFor(dtype), ops = be.training;
    // Shapes no other test uses (choices are kept per process and shape), all tuned (minFlops 0).
    const rows = 53 + (dtype === 'bfloat16' ? 0 : 2), inF = 104, o = 24;
    const [xg, xc] = pair(be, randn(rows * inF), [rows, inF]);
    const [wg, wc] = pair(be, randn(3 * o * inF, 0.1), [3 * o, inF]);
    const [bg, bc] = pair(be, randn(3 * o), [3 * o]);
    const saved = gemmTuning.minFlops, savedInStep = gemmTuning.inStep;
    gemmTuning.minFlops = 0;
    gemmTuning.stored = false;
    gemmTuning.inStep = 'off'; // timed by trial launches (the in-step mode has its own tests: gemm-tuning.test.ts)
    try {
      for (const bias of [false, true]) { // with a bias: one linear call a block
        const parts = ops.linearRowBlocks(xg, wg, bias ? bg : null, 3);
        assert.equal(parts.length, 3);
        parts.forEach((part, i) => {
          assert.deepEqual(part.shape, [rows, o]);
          const want = cpu.linear(xc, cpu.rowBlock(wc, i * o, o), bias ? cpu.rowBlock(bc, i * o, o) : null);
          close(`row block ${i}${bias ? ' with its bias' : ''}`, down(be, part), down(cpu, want), tol(dtype, 1e-6));
        });
      }
      // Wqkv's weight gradient from dy [3, rows, o]: dW_i (+)= dy_iᵀ·x, written once then added, as one batch.
      const dyAll = randn(3 * rows * o);
      const [dyg] = pair(be, dyAll, [3, rows, o]);
      const prior = randn(3 * o * inF);
      const [dWg, dWc] = f32pair(be, prior, [3 * o, inF]);
      const dyc = [0, 1, 2].map((i) => cpu.upload(asStored(dyAll.subarray(i * rows * o, (i + 1) * rows * o), dtype), [rows, o], 'float32'));
      const batch = { count: 3, strideA: rows * o, strideB: 0, strideC: o * inF };
      for (const beta of [0, 1]) {
        ops.gemm.gemm({ m: o, n: inF, k: rows, a: (dyg as CudaTensor).ptr, aTrans: true, b: (xg as CudaTensor).ptr, bTrans: false, c: (dWg as CudaTensor).ptr, alpha: 1, beta, inType: dtype, outType: 'float32', batch });
      }
      // The CPU: written (over the prior values: zeroed first), then added.
      cpu.scaleInPlace(dWc, 0);
      for (let call = 0; call < 2; call++) {
        dyc.forEach((dy, i) => cpu.linearBackwardInto({ dy, x: xc, weight: cpu.rowBlock(wc, i * o, o), dWeight: cpu.rowBlock(dWc, i * o, o), dBias: null }));
      }
      close('Wqkv gradient, written then added as one batch', down(be, dWg), down(cpu, dWc), tol(dtype, 1e-6, 1e-3));
    } finally {
      gemmTuning.minFlops = saved;
      gemmTuning.stored = true;
      gemmTuning.inStep = savedInStep;
    }
  });

  test(`cuda ${dtype}: GEMMs timed among the heuristic's candidates on first use add into their outputs once`, { skip }, () => {
    const be = cudaFor(dtype), g = trainingBackend(be);
    // Shapes no other test uses (the choice is kept per process and shape), all tuned (minFlops 0).
    const rows = 93 + (dtype === 'bfloat16' ? 0 : 2), inF = 152, outF = 88;
    const [xg, xc] = pair(be, randn(rows * inF), [rows, inF]);
    const [wg, wc] = pair(be, randn(outF * inF, 0.1), [outF, inF]);
    const [dWg, dWc] = f32pair(be, randn(outF * inF), [outF, inF]);
    const [dxg, dxc] = pair(be, randn(rows * inF), [rows, inF]);
    const before = tuningLog.length, saved = gemmTuning.minFlops, savedInStep = gemmTuning.inStep;
    gemmTuning.minFlops = 0;
    gemmTuning.stored = false; // time the candidates even where an earlier run stored its choice
    gemmTuning.inStep = 'off'; // timed by trial launches (the in-step mode has its own tests: gemm-tuning.test.ts)
    try {
      for (let call = 0; call < 2; call++) { // the first call tunes, the second reuses the choice: both add once
        const [dyg, dyc] = pair(be, randn(rows * outF), [rows, outF]);
        g.linearBackwardInto({ dy: dyg, x: xg, weight: wg, dWeight: dWg, dBias: null, dxInto: dxg });
        cpu.linearBackwardInto({ dy: dyc, x: xc, weight: wc, dWeight: dWc, dBias: null, dxInto: dxc });
      }
      close('dx accumulated twice', down(be, dxg), down(cpu, dxc), tol(dtype, 1e-5));
      close('dWeight accumulated twice', down(be, dWg), down(cpu, dWc), tol(dtype, 1e-6, 1e-3));
      const [resg, resc] = pair(be, randn(rows * outF), [rows, outF]);
      const resBefore = down(be, resg);
      close('linearResidual (tuned)', down(be, g.linearResidual(xg, wg, null, resg)), down(cpu, cpu.linearResidual(xc, wc, null, resc)), tol(dtype, 1e-6));
      assert.deepEqual(down(be, resg), resBefore, 'the residual (C) is read, not written');
    } finally {
      gemmTuning.minFlops = saved;
      gemmTuning.stored = true;
      gemmTuning.inStep = savedInStep;
    }
    if (gemmTuning.enabled) assert.ok(tuningLog.length >= before + 3, `${tuningLog.length - before} GEMM shapes tuned, expected 3 (dx, dW, linear + residual)`);
  });

  test(`cuda ${dtype}: accumulating LayerNorm backward with the residual gradient, ring, row-team and fallback kernels`, { skip }, () => {
    const be = cudaFor(dtype), g = trainingBackend(be), ops = be.training;
    const savedKernel = ops.lnKernel, savedRing = { ...ops.lnRing };
    try {
      // Widths (the default shapes, lnRing and lnTeams): 24 (a team of one warp, most lanes idle, 8 teams a
      // block), 776 (97 chunks: a team of 128 threads, some idle; 4 warps, whose sums move to warp 0's
      // shift), 2048 (the model's: 256 threads; in float32 with the residual 2 of the ring's 3 stages fit),
      // 4104 (3 chunks a thread: one team of 192 a block), 1003 (odd: the block-per-row fallback); 61 and
      // 613 rows spread unevenly over teams and blocks; 1501 rows of 2048 give most teams several rows (the
      // ring's stages wrap around) and the last few one fewer.
      for (const [r, n] of [[61, 24], [613, 776], [61, 2048], [1501, 2048], [45, 4104], [37, 1003]]) {
        const [dyg, dyc] = pair(be, randn(r * n), [r, n]);
        const [xg, xc] = pair(be, randn(r * n, 2), [r, n]);
        const [wg, wc] = pair(be, Float32Array.from(randn(n, 0.3), (v) => 1 + v), [n]);
        const [resg, resc] = pair(be, randn(r * n), [r, n]);
        for (const withBias of [false, true]) {
          const prior = randn(n), priorB = randn(n);
          // The reference once, then each row kernel from the same prior accumulators.
          const [dWc, dBc] = [cpu.upload(Float32Array.from(prior), [n], 'float32'), cpu.upload(Float32Array.from(priorB), [n], 'float32')];
          const want = ([null, 'residual'] as const).map((residual) => {
            const dx = down(cpu, cpu.layerNormBackwardInto({ dy: dyc, x: xc, weight: wc, eps: 1e-5, dWeight: dWc, dBias: withBias ? dBc : null, residual: residual && resc }));
            return { residual, dx, dW: down(cpu, dWc), dB: down(cpu, dBc) };
          });
          for (const { kernel, ring } of LN_ROW_KERNELS) {
            ops.lnKernel = kernel;
            Object.assign(ops.lnRing, savedRing, ring);
            const dWg = be.upload(prior, [n], 'float32'), dBg = be.upload(priorB, [n], 'float32');
            for (const w of want) {
              const dxg = g.layerNormBackwardInto({ dy: dyg, x: xg, weight: wg, eps: 1e-5, dWeight: dWg, dBias: withBias ? dBg : null, residual: w.residual && resg });
              const what = `${kernel}${JSON.stringify(ring)}, ${r}×${n}${withBias ? ', bias' : ''}${w.residual ? ', residual' : ''}`;
              close(`layerNorm dx (${what})`, down(be, dxg), w.dx, tol(dtype, 1e-5));
              close(`layerNorm dWeight accumulated (${what})`, down(be, dWg), w.dW, tol(dtype, 1e-5, 3e-3));
              close(`layerNorm dBias (${what})`, down(be, dBg), w.dB, tol(dtype, 1e-5, 3e-3));
            }
          }
        }
      }
      Object.assign(ops.lnRing, savedRing);
      // The ring's depth changes when rows arrive, not the arithmetic: 1, 2 and 4 stages give the bits of
      // the default's, dx (with the residual, and into a column block) and, where the grid stays the same,
      // dWeight, at 1501 × 2048 (stages wrap around many times) and 613 × 776; so do 2 blocks of half the
      // teams an SM for dx.
      ops.lnKernel = 'ring';
      for (const [r, n] of [[1501, 2048], [613, 776]]) {
        const [dyg] = pair(be, randn(r * n), [r, n]);
        const [xg] = pair(be, randn(r * n, 2), [r, n]);
        const [resg] = pair(be, randn(r * n), [r, n]);
        const [wg] = pair(be, randn(n), [n]);
        const run = () => {
          const dW = be.zeros([n], 'float32');
          const dx = g.layerNormBackwardInto({ dy: dyg, x: xg, weight: wg, eps: 1e-5, dWeight: dW, dBias: null, residual: resg });
          const buffer = be.zeros([r, 3 * n], dtype);
          ops.layerNormBackwardInto({ dy: dyg, x: xg, weight: wg, eps: 1e-5, dWeight: dW, dBias: null, dxColumns: { tensor: buffer, column: 2 * n } });
          return { dx: down(be, dx), dxColumns: columnBlock(down(be, buffer), r, n, 2), dW: down(be, dW) };
        };
        // The blocks a launch of each call has (teams a block, blocks an SM), which order dWeight's sums.
        const grid = () => [true, false].map((residual) => {
          const s = ops.ringShape(n, Math.ceil(n / 8 / ops.lnRing.teamMax), residual, 1);
          return `${s.teams}×${s.minBlocks}`;
        }).join(', ');
        const base = run(), baseGrid = grid();
        for (const shape of [{ stages: 1 }, { stages: 2 }, { stages: 4 }, { blockThreads: 512 }]) {
          Object.assign(ops.lnRing, savedRing, shape);
          const got = run(), what = `${JSON.stringify(shape)}, ${r}×${n}`;
          sameBits(`dx with the residual, ${what}`, got.dx, base.dx);
          sameBits(`dx into a column block, ${what}`, got.dxColumns, base.dxColumns);
          // Another grid adds the blocks' dWeight sums in another order (fewer stages can let more blocks
          // share an SM's shared memory: one stage in float32 at width 2048 fits 2 blocks, three stages 1).
          if (grid() !== baseGrid) close(`dWeight, ${what}`, got.dW, base.dW, 1e-6);
          else sameBits(`dWeight, ${what}`, got.dW, base.dW);
        }
        Object.assign(ops.lnRing, savedRing);
      }
    } finally {
      ops.lnKernel = savedKernel;
      Object.assign(ops.lnRing, savedRing);
    }
    // The row kernel is deterministic: the same inputs give the same bits (dx and dWeight), at a
    // width with idle threads and at the model's with several rows a team.
    for (const [r, n] of [[613, 776], [1501, 2048]]) {
      const [dyg] = pair(be, randn(r * n), [r, n]);
      const [xg] = pair(be, randn(r * n), [r, n]);
      const [resg] = pair(be, randn(r * n), [r, n]);
      const [wg] = pair(be, randn(n), [n]);
      const runs = [0, 1].map(() => {
        const dW = be.zeros([n], 'float32');
        const dx = g.layerNormBackwardInto({ dy: dyg, x: xg, weight: wg, eps: 1e-5, dWeight: dW, dBias: null, residual: resg });
        return [down(be, dx), down(be, dW)];
      });
      assert.deepEqual(runs[0][1], runs[1][1], `dWeight differs between two identical runs (${r}×${n})`);
      assert.deepEqual(runs[0][0], runs[1][0], `dx differs between two identical runs (${r}×${n})`);
    }
    // GELU backward on the 16-byte path (8 values a thread) and its scalar tail-free twin at an odd size.
    for (const n of [8 * 1001, 1001]) {
      const [ag, ac] = pair(be, randn(n, 2), [n]);
      const [bg, bc] = pair(be, randn(n), [n]);
      close(`gelu backward (${n})`, down(be, g.geluBackward(bg, ag)), down(cpu, cpu.geluBackward(bc, ac)), tol(dtype, 1e-6));
    }
  });

  // 1001: the two-pass kernel; 1004 (a multiple of 4): the row held in shared memory. In bf16 the logits
  // are bf16 (autocast's math; the CPU twin rounds them the same way), dz written over them.
  for (const vocab of [1001, 1004]) {
    test(`cuda ${dtype}: the output layer fused with cross entropy, over several row blocks, vocabulary ${vocab}`, { skip }, () => {
      const be = cudaFor(dtype), g = trainingBackend(be);
      const n = 45, d = 72;
      const [xg, xc] = pair(be, randn(n * d), [n, d]);
      const [tg, tc] = pair(be, randn(vocab * d, 0.5), [vocab, d]);
      const targets = Int32Array.from({ length: n }, (_, i) => (i % 9 === 4 ? -1 : Math.floor(rng.next() * vocab)));
      // The CPU twin's logit rounding (beyond the Backend interface: CpuTrainingOps takes logitType).
      const logitType: 'float32' | 'bfloat16' = dtype;
      const onCpu = (a: Parameters<typeof cpu.crossEntropyWithOutput>[0]) => {
        const withType = { ...a, logitType };
        return cpu.crossEntropyWithOutput(withType);
      };
      be.training.logitBlockElements = 16 * vocab; // at most 16 rows a block: 3 blocks of 15
      try {
        for (const logitScale of [null, 0.7]) {
          const a = { logitScale, lossScale: 1 / 40, gradients: true };
          const rg = g.crossEntropyWithOutput({ x: xg, table: tg, targets: be.upload(targets, [n], 'int32'), ...a });
          const rc = onCpu({ x: xc, table: tc, targets: cpu.upload(targets, [n], 'int32'), ...a });
          assert.equal(rg.count, rc.count);
          close(`loss sum (scale ${logitScale})`, down(be, rg.lossSum), down(cpu, rc.lossSum), tol(dtype, 1e-6, 1e-3));
          close(`dx (scale ${logitScale})`, down(be, rg.dx!), down(cpu, rc.dx!), tol(dtype, 1e-5));
          close(`dTable (scale ${logitScale})`, down(be, rg.dTable!), down(cpu, rc.dTable!), tol(dtype, 1e-5, 1e-2));
        }
        // dTableInto: the table's gradient added into an accumulator that already holds values.
        const prior = randn(vocab * d);
        const [ig, ic] = f32pair(be, prior, [vocab, d]);
        const a = { logitScale: 0.7, lossScale: 1 / 40, gradients: true };
        const rg = g.crossEntropyWithOutput({ x: xg, table: tg, targets: be.upload(targets, [n], 'int32'), dTableInto: ig, ...a });
        onCpu({ x: xc, table: tc, targets: cpu.upload(targets, [n], 'int32'), dTableInto: ic, ...a }); // adds into ic
        assert.equal(rg.dTable, ig);
        close('dTable into an accumulator', down(be, ig), down(cpu, ic), tol(dtype, 1e-6, 1e-3));
        // The loss alone (no dz: the logits are only read).
        const lossOnly = g.crossEntropyWithOutput({ x: xg, table: tg, targets: be.upload(targets, [n], 'int32'), logitScale: null, lossScale: 1, gradients: false });
        assert.equal(lossOnly.dx, null);
        const lossOnCpu = onCpu({ x: xc, table: tc, targets: cpu.upload(targets, [n], 'int32'), logitScale: null, lossScale: 1, gradients: false });
        close('loss sum without gradients', down(be, lossOnly.lossSum), down(cpu, lossOnCpu.lossSum), tol(dtype, 1e-6, 1e-3));
        assert.throws(() => g.crossEntropyWithOutput({ x: xg, table: tg, targets: be.upload(Int32Array.from({ length: n }, () => vocab), [n], 'int32'), logitScale: null, lossScale: 1, gradients: false }),
          new RegExp(`target ${vocab} is outside the vocabulary`));
      } finally {
        be.training.logitBlockElements = 1 << 28;
      }
    });
  }

  test(`cuda ${dtype}: embedding scatter-add, accumulation, scaling and the sum of squares`, { skip }, () => {
    const be = cudaFor(dtype), g = trainingBackend(be);
    const vocab = 301, d = 37, n = 97;
    const ids = Int32Array.from({ length: n }, () => Math.floor(rng.next() * 40)); // many repeats
    const [eg, ec] = f32pair(be, randn(vocab * d), [vocab, d]);
    const [dyg, dyc] = pair(be, randn(n * d), [n, d]);
    g.embeddingBackwardInto(eg, be.upload(ids, [n], 'int32'), dyg, 0.3);
    cpu.embeddingBackwardInto(ec, cpu.upload(ids, [n], 'int32'), dyc, 0.3);
    close('embedding backward', down(be, eg), down(cpu, ec), 1e-6);
    const [cg, cc] = f32pair(be, randn(n * 3 * d), [n, 3 * d]);
    const [sg, sc] = pair(be, randn(n * 3 * d), [n, 3 * d]);
    g.addInto(cg, sg, -0.7);
    cpu.addInto(cc, sc, -0.7);
    close('addInto', down(be, cg), down(cpu, cc), 1e-6);
    g.scaleInPlace(cg, 0.37);
    cpu.scaleInPlace(cc, 0.37);
    close('scaleInPlace', down(be, cg), down(cpu, cc), 1e-6);
    const big = randn(1_000_003);
    const [bg, bc] = f32pair(be, big, [1_000_003]);
    const want = cpu.sumOfSquares(bc);
    assert.ok(Math.abs(g.sumOfSquares(bg) - want) <= 1e-9 * want, 'sum of squares (float32)');
    const [hg, hc] = pair(be, big, [1_000_003]);
    const wantH = cpu.sumOfSquares(hc);
    assert.ok(Math.abs(g.sumOfSquares(hg) - wantH) <= 1e-9 * wantH, `sum of squares (${dtype})`);
    // All at once (one round trip): float32 of several sizes (one under a block, one with a tail of 3) and the activation dtype.
    const parts = [1_000_003, 7, 2048, 70_001].map((m) => f32pair(be, randn(m), [m]));
    const gs = [...parts.map(([a]) => a), hg, be.zeros([0], 'float32')], cs = [...parts.map(([, b]) => b), hc, cpu.zeros([0], 'float32')];
    const wantAll = cpu.sumOfSquaresAll(cs);
    assert.ok(Math.abs(wantAll - cs.reduce((sum, t) => sum + cpu.sumOfSquares(t), 0)) <= 1e-12 * wantAll, 'CPU: all at once = the sum of each');
    assert.ok(Math.abs(g.sumOfSquaresAll(gs) - wantAll) <= 1e-9 * wantAll, `sum of squares of ${gs.length} tensors at once`);
    assert.equal(g.sumOfSquaresAll([]), 0);
  });

  test(`cuda ${dtype}: AdamW steps on float32 masters refresh the compute copy`, { skip }, () => {
    const be = cudaFor(dtype), g = trainingBackend(be);
    const n = 10_007;
    const [pg, pc] = f32pair(be, randn(n), [n]);
    const [mg, mc] = f32pair(be, new Float32Array(n), [n]);
    const [vg, vc] = f32pair(be, new Float32Array(n), [n]);
    const copyG = be.zeros([n], be.activationDType), copyC = cpu.zeros([n], 'float32');
    for (let step = 1; step <= 3; step++) {
      const [gg, gc] = f32pair(be, randn(n, 1e-3), [n]);
      const a = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, decay: 1e-4, step };
      g.adamwStep({ param: pg, grad: gg, m: mg, v: vg, computeCopy: copyG, ...a });
      cpu.adamwStep({ param: pc, grad: gc, m: mc, v: vc, computeCopy: copyC, ...a });
    }
    close('param', down(be, pg), down(cpu, pc), 1e-6);
    close('m', down(be, mg), down(cpu, mc), 1e-6);
    close('v', down(be, vg), down(cpu, vc), 1e-6);
    const master = down(be, pg);
    assert.deepEqual(down(be, copyG), asStored(master, be.activationDType), 'compute copy = master rounded to its dtype');
  });
  test(`cuda ${dtype}: AdamW on many parameters at once (one launch, or one a tensor when unaligned) equals the reference`, { skip }, () => {
    const be = cudaFor(dtype), g = trainingBackend(be);
    // Sizes: under a group of four, a tail of 1–3 after the 16-byte groups, several 4096-element chunks plus a tail.
    const sizes = [10_007, 3, 2 * 4096 + 5, 64, 1, 4096];
    const make = (n: number) => {
      const [pg, pc] = f32pair(be, randn(n), [n]);
      const [mg, mc] = f32pair(be, randn(n, 1e-3), [n]);
      const [vg, vc] = f32pair(be, Float32Array.from(randn(n, 1e-3), (x) => x * x), [n]);
      return { gpu: { param: pg, m: mg, v: vg, computeCopy: be.zeros([n], be.activationDType) }, cpu: { param: pc, m: mc, v: vc, computeCopy: cpu.zeros([n], 'float32') } };
    };
    const params = sizes.map(make);
    // An unaligned view (a row block at a 12-byte offset) sends a whole call to the per-tensor kernel.
    const [wideG, wideC] = f32pair(be, randn(5 * 3), [5, 3]);
    const [wmG, wmC] = f32pair(be, new Float32Array(15), [5, 3]), [wvG, wvC] = f32pair(be, new Float32Array(15), [5, 3]);
    const odd = { gpu: { param: g.rowBlock(wideG, 1, 4), m: g.rowBlock(wmG, 1, 4), v: g.rowBlock(wvG, 1, 4), computeCopy: null },
      cpu: { param: cpu.rowBlock(wideC, 1, 4), m: cpu.rowBlock(wmC, 1, 4), v: cpu.rowBlock(wvC, 1, 4), computeCopy: null } };
    for (let step = 1; step <= 4; step++) {
      const set = step === 3 ? [...params, odd] : step === 4 ? params.slice(1) : params; // step 4: a different set rebuilds the tables
      const grads = set.map((p) => f32pair(be, randn(elementCount(p.gpu.param.shape), 1e-3), [...p.gpu.param.shape]));
      const a = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, decay: 1e-4, step };
      g.adamwStepAll({ tensors: set.map((p, i) => ({ ...p.gpu, grad: grads[i][0] })), ...a });
      cpu.adamwStepAll({ tensors: set.map((p, i) => ({ ...p.cpu, grad: grads[i][1] })), ...a });
    }
    // Compared over all the tensors at once, as the one-tensor test compares its 10,007 values: a tensor of
    // one or three values has no norm to average over (m = β1·m + (1-β1)·g can cancel to a few ulps of
    // float32 rounding left in one element), while a wrong or skipped tail element still moves the whole by
    // 3e-5 (param) to 1e-3 (m, v): far above the 1e-6 allowed.
    const all = (side: 'gpu' | 'cpu', name: 'param' | 'm' | 'v') => Float32Array.from([...params, odd].flatMap((p) => [...down(side === 'gpu' ? be : cpu, p[side][name])]));
    for (const name of ['param', 'm', 'v'] as const) close(`${name} of all tensors`, all('gpu', name), all('cpu', name), 1e-6);
    for (const [i, p] of params.entries()) {
      assert.deepEqual(down(be, p.gpu.computeCopy), asStored(down(be, p.gpu.param), be.activationDType), `compute copy ${i} = master rounded`);
    }
    close('the unaligned tensor\'s neighbours are untouched', down(be, wideG).subarray(0, 3), down(cpu, wideC).subarray(0, 3), 0);
  });

  // The fused Wqkv backward's producers (backend.ts ColumnBlockOutputs): attention's dk and dv and
  // LayerNorm's dx written into column blocks of a [rows, 3·width] buffer must be the bits the same op gives
  // as tensors of their own (only the store's address changes), and the buffer's other columns untouched.
  // Attention: the tensor-core kernels (head 128: fa3 on sm_90a; head 32: mma.sync) and the scalar ones
  // (head 24; every float32 case). LayerNorm: the row-team kernel (width 256) and the block-per-row one
  // (width 100, not a multiple of 8), with and without a bias.
  test(`cuda ${dtype}: attention's dk, dv and LayerNorm's dx written into column blocks of a wider tensor are the bits of their own tensors`, { skip }, () => {
    const be = cudaFor(dtype), g = trainingBackend(be), ops = be.training;
    for (const [batch, t, heads, dHead] of [[2, 130, 2, 128], [1, 77, 3, 32], [2, 45, 2, 24]]) {
      const d = heads * dHead, rows = batch * t;
      const [q, k, v, dOut] = [0, 1, 2, 3].map(() => pair(be, randn(rows * d), [batch, t, d])[0]);
      const args: AttentionArgs = { q, k, v, kvLen: t, nHeads: heads, scale: 1 / Math.sqrt(dHead), alibiSlopes: Float32Array.from({ length: heads }, (_, h) => 2 ** (-(h + 1))), keyMask: null };
      const f = g.attentionForTraining(args);
      const own = ops.attentionBackward(args, f.out, f.logSumExp, dOut);
      const fill = randn(rows * 3 * d), buffer = be.upload(fill, [rows, 3 * d], dtype);
      const got = ops.attentionBackward(args, f.out, f.logSumExp, dOut, { dk: { tensor: buffer, column: d }, dv: { tensor: buffer, column: 2 * d } });
      assert.equal(got.dk, null);
      assert.equal(got.dv, null);
      const all = down(be, buffer), what = `${batch}×${t} tokens, ${heads} heads of ${dHead}`;
      sameBits(`dq, ${what}`, down(be, got.dq), down(be, own.dq));
      sameBits(`dk in columns d..2d, ${what}`, columnBlock(all, rows, d, 1), down(be, own.dk));
      sameBits(`dv in columns 2d..3d, ${what}`, columnBlock(all, rows, d, 2), down(be, own.dv));
      sameBits(`columns 0..d untouched, ${what}`, columnBlock(all, rows, d, 0), columnBlock(asStored(fill, dtype), rows, d, 0));
    }
    for (const [rows, n, withBias] of [[37, 256, false], [37, 256, true], [29, 100, false]] as const) {
      const [dy] = pair(be, randn(rows * n), [rows, n]), [x] = pair(be, randn(rows * n, 2), [rows, n]), [w] = pair(be, randn(n), [n]);
      const grads = () => ({ dWeight: be.upload(new Float32Array(n), [n], 'float32'), dBias: withBias ? be.upload(new Float32Array(n), [n], 'float32') : null });
      const a = { dy, x, weight: w, eps: 1e-5 }, ownGrads = grads(), intoGrads = grads();
      const dx = ops.layerNormBackwardInto({ ...a, ...ownGrads });
      const fill = randn(rows * 3 * n), buffer = be.upload(fill, [rows, 3 * n], dtype);
      assert.equal(ops.layerNormBackwardInto({ ...a, ...intoGrads, dxColumns: { tensor: buffer, column: n } }), buffer);
      const all = down(be, buffer), what = `${rows} rows of ${n}${withBias ? ', bias' : ''}`;
      sameBits(`dx in columns n..2n, ${what}`, columnBlock(all, rows, n, 1), down(be, dx));
      for (const c of [0, 2]) sameBits(`columns ${c}n..${c + 1}n untouched, ${what}`, columnBlock(all, rows, n, c), columnBlock(asStored(fill, dtype), rows, n, c));
      // The row-team kernel's weight sums are deterministic; the block-per-row one adds them with atomics.
      const check = n % 8 === 0 ? sameBits : (name: string, got: Float32Array, want: Float32Array) => close(name, got, want, 1e-6);
      check(`dWeight, ${what}`, down(be, intoGrads.dWeight), down(be, ownGrads.dWeight));
      if (withBias) check(`dBias, ${what}`, down(be, intoGrads.dBias!), down(be, ownGrads.dBias!));
    }
  });
}

test('the training ops are all there', { skip }, () => {
  const g: TrainingBackend = trainingBackend(cudaFor('float32'));
  assert.equal(typeof g.adamwStep, 'function');
});
