// Every CUDA kernel against its CPU twin (the CPU backend, or a plain function here where the CPU
// backend has no such op) on fresh random inputs of awkward sizes, in bfloat16 and float32.
// Skipped, with the reason, where no CUDA device is usable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CudaTensor } from '../src/backend/cuda/index.js';
import type { Tensor } from '../src/backend/backend.js';
import { argmax } from '../src/generate/sampling.js';
import { FLASH_FORWARD_SHAPES, launchFlashForward } from '../src/backend/cuda/flash.js';
import { sampleTwinCandidates } from './cuda-twins.js';
import { alibiSlopesFor, close, cpu, cudaFor, down, GELU_TABLE_TEST_SHAPES, pair, randn, rng, sameBits, skip } from './cuda-harness.js';

// bf16 storage rounds each output to 8 bits of mantissa (relative 2^-9); float32 is far tighter.
const tol = (dtype: string, fp32 = 2e-5) => (dtype === 'bfloat16' ? 1e-2 : fp32);

/** The GEMM epilogue's row statistics of y [rows, outF]: per 16-column tile, its mean and Σ (v − mean)². */
function tileStatistics(y: Float32Array, rows: number, outF: number): Float32Array {
  const want = new Float32Array(rows * outF / 8);
  for (let r = 0; r < rows; r++) for (let tile = 0; tile < outF / 16; tile++) {
    const v = y.subarray(r * outF + tile * 16, r * outF + tile * 16 + 16);
    const m = v.reduce((a, b) => a + b, 0) / 16;
    want[(r * outF / 16 + tile) * 2] = m;
    want[(r * outF / 16 + tile) * 2 + 1] = v.reduce((a, b) => a + (b - m) ** 2, 0);
  }
  return want;
}

for (const dtype of ['bfloat16', 'float32'] as const) {
  test(`cuda ${dtype}: embedding gathers rows and refuses ids out of range`, { skip }, () => {
    const be = cudaFor(dtype);
    const vocab = 1001, d = 133, n = 37;
    const [tg, tc] = pair(be, randn(vocab * d), [vocab, d]);
    const ids = Int32Array.from({ length: n }, () => Math.floor(rng.next() * vocab));
    const got = down(be, be.embedding(be.upload(ids, [n], 'int32'), tg));
    close('embedding', got, down(cpu, cpu.embedding(cpu.upload(ids, [n], 'int32'), tc)), 0);
    const bad = be.embedding(be.upload(Int32Array.of(3, vocab + 5), [2], 'int32'), tg);
    assert.throws(() => be.download(bad), /token id 1006 is outside the vocabulary/);
  });

  test(`cuda ${dtype}: elementwise add, scale, clamp, exact GELU, columns, rows, writeRows`, { skip }, () => {
    const be = cudaFor(dtype);
    const rows = 29, w = 1003;
    const [ag, ac] = pair(be, randn(rows * w, 2), [rows, w]);
    const [bg, bc] = pair(be, randn(rows * w, 2), [rows, w]);
    close('add', down(be, be.add(ag, bg)), down(cpu, cpu.add(ac, bc)), tol(dtype, 1e-7));
    close('scale', down(be, be.scale(ag, 0.37)), down(cpu, cpu.scale(ac, 0.37)), tol(dtype, 1e-7));
    close('clamp', down(be, be.clamp(ag, 1.3)), down(cpu, cpu.clamp(ac, 1.3)), tol(dtype, 1e-7));
    close('gelu', down(be, be.gelu(ag)), down(cpu, cpu.gelu(ac)), tol(dtype, 1e-6));
    const [g8, g8c] = pair(be, randn(16 * 1000, 2), [16, 1000]); // 8 values a thread in bf16
    close('gelu, 8 at a time', down(be, be.gelu(g8)), down(cpu, cpu.gelu(g8c)), tol(dtype, 1e-6));
    close('columns', down(be, be.columns(ag, 17, 501)), down(cpu, cpu.columns(ac, 17, 501)), 0);
    const idx = [5, 0, 28, 5, 13];
    close('rows', down(be, be.rows(ag, idx)), down(cpu, cpu.rows(ac, idx)), 0);
    const batch = 3, cap = 11, t = 4, at = 6, width = 37;
    const [dg, dc] = pair(be, randn(batch * cap * width), [batch, cap, width]);
    const [sg, sc] = pair(be, randn(batch * t * width), [batch, t, width]);
    be.writeRows(dg, sg, at);
    cpu.writeRows(dc, sc, at);
    close('writeRows', down(be, dg), down(cpu, dc), 0);
  });

  test(`cuda ${dtype}: LayerNorm with and without bias, and fused with the residual add`, { skip }, () => {
    const be = cudaFor(dtype);
    for (const [rows, d] of [[29, 1000], [3, 2051], [7, 64]]) {
      const [xg, xc] = pair(be, randn(rows * d, 3), [rows, d]);
      const [wg, wc] = pair(be, Float32Array.from(randn(d), (v) => 1 + 0.3 * v), [d]);
      const [bg, bc] = pair(be, randn(d), [d]);
      close(`layerNorm weight-only ${rows}x${d}`, down(be, be.layerNorm(xg, wg, null, 1e-5)), down(cpu, cpu.layerNorm(xc, wc, null, 1e-5)), tol(dtype, 1e-5));
      close(`layerNorm with bias ${rows}x${d}`, down(be, be.layerNorm(xg, wg, bg, 1e-5)), down(cpu, cpu.layerNorm(xc, wc, bc, 1e-5)), tol(dtype, 1e-5));
      const [rg, rc] = pair(be, randn(rows * d, 3), [rows, d]);
      const out = be.alloc([rows, d]);
      be.layerNormInto(xg as CudaTensor, rg as CudaTensor, wg as CudaTensor, bg as CudaTensor, out, rows, d, 1e-5);
      const sum = cpu.add(xc, rc);
      close('fused add: the residual stream', down(be, xg), down(cpu, sum), tol(dtype, 1e-7));
      close('fused add: LayerNorm', down(be, out), down(cpu, cpu.layerNorm(sum, wc, bc, 1e-5)), tol(dtype, 1e-5));
      // A float32 residual stream in, the compute dtype out (the decoder's layout).
      const raw = randn(rows * d, 3);
      const xf = be.upload(raw, [rows, d], 'float32') as CudaTensor;
      const outF = be.alloc([rows, d]);
      be.layerNormInto(xf, null, wg as CudaTensor, bg as CudaTensor, outF, rows, d, 1e-5);
      close('layerNorm of a float32 stream', down(be, outF), down(cpu, cpu.layerNorm(cpu.upload(raw, [rows, d], 'float32'), wc, bc, 1e-5)), tol(dtype, 1e-5));
    }
  });

  test(`cuda ${dtype}: LayerNorm a warp a row (layernorm_rows8) gives layernorm8's bits, and the CPU twin's values`, { skip }, () => {
    const be = cudaFor(dtype);
    const saved = [be.layerNormWarpRows, be.layerNormWarpRowsFrom, be.layerNormRowWarps] as const;
    try {
      be.layerNormWarpRowsFrom = 1;
      // Widths for 1, 2, 4, 8, 10 (padded to 16 in its reduction) and 16 of layernorm8's warps, some with
      // a part-filled last warp; row counts that leave the last block part-empty.
      const shapes = [[37, 2048, 4], [29, 1000, 4], [9, 64, 2], [11, 200, 8], [13, 392, 3], [13, 2560, 4], [6, 4096, 1], [5, 3976, 2]];
      for (const [rows, d, warps] of shapes) {
        const xBytes = dtype === 'float32' ? 4 : 2;
        if (d * xBytes > 8192) continue; // rows over 8 KB keep layernorm8
        be.layerNormRowWarps = warps;
        const [xg, xc] = pair(be, Float32Array.from(randn(rows * d, 3), (v) => v + 0.7), [rows, d]);
        const [wg, wc] = pair(be, Float32Array.from(randn(d), (v) => 1 + 0.3 * v), [d]);
        const [bg, bc] = pair(be, randn(d), [d]);
        const xf = be.upload(Float32Array.from(randn(rows * d, 2), (v) => v - 0.4), [rows, d], 'float32') as CudaTensor;
        const inputs: Array<[string, CudaTensor, Tensor]> = [[be.activationDType, xg as CudaTensor, xc]];
        if (d * 4 <= 8192) inputs.push(['float32 stream', xf, cpu.upload(be.download(xf), [rows, d], 'float32')]);
        for (const [what, x, xRef] of inputs) {
          for (const [bias, biasRef] of [[null, null], [bg as CudaTensor, bc]] as const) {
            const run = (warpRows: boolean) => {
              be.layerNormWarpRows = warpRows;
              const out = be.alloc([rows, d]);
              assert.equal(be.layerNormKernel(x, null, wg as CudaTensor, bias, out, rows, d), warpRows ? 'layernorm_rows8' : 'layernorm8');
              be.layerNormInto(x, null, wg as CudaTensor, bias, out, rows, d, 1e-5);
              return down(be, out);
            };
            const label = `${rows}x${d} ${what}${bias ? ', bias' : ''}, ${warps} rows a block`;
            const got = run(true);
            sameBits(`layernorm_rows8 against layernorm8, ${label}`, got, run(false));
            close(`layernorm_rows8 against the CPU, ${label}`, got, down(cpu, cpu.layerNorm(xRef, wc, biasRef, 1e-5)), tol(dtype, 1e-5));
          }
        }
      }
    } finally {
      [be.layerNormWarpRows, be.layerNormWarpRowsFrom, be.layerNormRowWarps] = saved;
    }
  });

  if (dtype === 'bfloat16') test('cuda bfloat16: GELU through the table (gelu_table8) gives gelu_bf16x8\'s bits for every bf16 input, at several launch shapes', { skip }, () => {
    const be = cudaFor(dtype);
    const saved = [be.geluTable, be.geluTableShape] as const;
    try {
      // Every 16-bit pattern once (zeros, subnormals, the tabled range, large values, infinities, NaNs),
      // then a random tensor whose vector count is no multiple of a turn's.
      const all = be.upload(Uint16Array.from({ length: 65536 }, (_, i) => i), [65536], 'bfloat16');
      const [rg, rc] = pair(be, randn(8 * 1001, 2), [8 * 1001]);
      be.geluTable = false;
      const want = [down(be, be.gelu(all)), down(be, be.gelu(rg))];
      be.geluTable = true;
      for (const shape of GELU_TABLE_TEST_SHAPES) {
        be.geluTableShape = shape;
        const label = JSON.stringify(shape);
        sameBits(`gelu_table8 over all bf16 inputs, ${label}`, down(be, be.gelu(all)), want[0]);
        const got = down(be, be.gelu(rg));
        sameBits(`gelu_table8 over 8008 random inputs, ${label}`, got, want[1]);
        close(`gelu_table8 against the CPU, ${label}`, got, down(cpu, cpu.gelu(rc)), tol(dtype));
      }
    } finally {
      [be.geluTable, be.geluTableShape] = saved;
    }
  });

  test(`cuda ${dtype}: linear (cuBLASLt) with and without bias, and accumulating into y`, { skip }, () => {
    const be = cudaFor(dtype);
    for (const [rows, inF, outF] of [[19, 301, 259], [1, 2048, 517], [70, 64, 192]]) {
      const [xg, xc] = pair(be, randn(rows * inF), [rows, inF]);
      const [wg, wc] = pair(be, randn(outF * inF, 0.05), [outF, inF]);
      const [bg, bc] = pair(be, randn(outF), [outF]);
      close(`linear ${rows}x${inF}x${outF}`, down(be, be.linear(xg, wg, null)), down(cpu, cpu.linear(xc, wc, null)), tol(dtype, 1e-5));
      close(`linear+bias ${rows}x${inF}x${outF}`, down(be, be.linear(xg, wg, bg)), down(cpu, cpu.linear(xc, wc, bc)), tol(dtype, 1e-5));
      const [yg, yc] = pair(be, randn(rows * outF), [rows, outF]);
      be.matmulInto(xg as CudaTensor, wg as CudaTensor, bg as CudaTensor, yg as CudaTensor, rows, true);
      close('y += x·Wᵀ + b', down(be, yg), down(cpu, cpu.add(yc, cpu.linear(xc, wc, bc))), tol(dtype, 1e-5));
      // Operands in the compute dtype, y float32 (fp32 logits and residual stream): no output rounding.
      const raw = randn(rows * outF);
      const yf = be.upload(raw, [rows, outF], 'float32') as CudaTensor;
      be.matmulInto(xg as CudaTensor, wg as CudaTensor, null, yf, rows, true);
      close('float32 y += x·Wᵀ', down(be, yf), down(cpu, cpu.add(cpu.upload(raw, [rows, outF], 'float32'), cpu.linear(xc, wc, null))), 1e-5);
    }
  });

  test(`cuda ${dtype}: few-row GEMMs (skinny_gemm.cu in bf16) with bias, fused GELU, accumulation, float32 y`, { skip }, () => {
    const be = cudaFor(dtype);
    for (const [rows, inF, outF] of [[1, 2048, 517], [5, 320, 100], [16, 8192, 35], [9, 2048, 2048]]) {
      const [xg, xc] = pair(be, randn(rows * inF), [rows, inF]);
      const [wg, wc] = pair(be, randn(outF * inF, 0.05), [outF, inF]);
      const [bg, bc] = pair(be, randn(outF), [outF]);
      const what = `${rows}x${inF}x${outF}`;
      const y = be.alloc([rows, outF]);
      be.matmulInto(xg as CudaTensor, wg as CudaTensor, bg as CudaTensor, y, rows, false, true);
      close(`gelu(x·Wᵀ + b) ${what}`, down(be, y), down(cpu, cpu.gelu(cpu.linear(xc, wc, bc))), tol(dtype, 1e-5));
      const raw = randn(rows * outF);
      const yf = be.upload(raw, [rows, outF], 'float32') as CudaTensor;
      be.matmulInto(xg as CudaTensor, wg as CudaTensor, null, yf, rows, true);
      close(`float32 y += x·Wᵀ ${what}`, down(be, yf), down(cpu, cpu.add(cpu.upload(raw, [rows, outF], 'float32'), cpu.linear(xc, wc, null))), 1e-5);
    }
  });

  if (dtype === 'bfloat16') test(`cuda ${dtype}: few-row GEMMs with the weights copied into shared memory before the wait (MPT_SMEM_W) or through registers`, { skip }, () => {
    // Both skinny_gemm.cu paths (weights through shared memory or registers; y's old value and the
    // bias loaded right after the wait in both): rows 1, 5, 9, 16 (one and two row tiles), K not a power of two (37 and 13 steps of 32, so warps get unequal shares and some none;
    // K % 64 = 32 leaves the shared rows unpadded), outF not a multiple of 16 (clamped rows), warp
    // counts forced to 4 and 16. Checked: gelu(x·Wᵀ + b), float32 y += x·Wᵀ + b with its row statistics.
    const be = cudaFor(dtype);
    const saved = [be.smemWeights, be.smemWeightsWarps, be.smemWeightsMinRows] as const;
    be.smemWeightsMinRows = 1; // the default takes it from 9 rows on; every row count is checked here
    // Every second case also L2-prefetches a range of another buffer before its wait (the decoder's
    // next-GEMM prefetch), of a size that is not a whole number of lines and, for some grids, fewer
    // lines than blocks (blocks with an empty share): the results must not move.
    const other = be.alloc([4 * 2 ** 20], 'bfloat16'); // 8 MiB: every range below lies inside it
    let caseNo = 0;
    const cases: [number, number, number, number | null][] = [
      [1, 2048, 2048, null], [5, 1184, 100, null], [9, 416, 2048, null], [16, 2048, 48, null], [16, 96, 35, null], [1, 1184, 64, 16], [9, 2048, 32, 4],
    ];
    try {
      for (const smem of [true, false]) {
        for (const [rows, inF, outF, warps] of cases) {
          be.smemWeights = smem;
          be.smemWeightsWarps = warps;
          const plan = be.smemWeightsPlan(rows, inF, outF);
          assert.equal(plan !== null, smem && be.device.major >= 9, `${rows}x${inF}x${outF}: the shared-memory variant runs exactly when asked (sm_90+)`);
          if (plan && warps) assert.equal(plan.warps, warps);
          const what = `${rows}x${inF}x${outF}${smem ? `, weights in shared memory (${plan!.warps} warps)` : ', weights through registers'}`;
          const [xg, xc] = pair(be, randn(rows * inF), [rows, inF]);
          const [wg, wc] = pair(be, randn(outF * inF, 0.05), [outF, inF]);
          const [bg, bc] = pair(be, randn(outF), [outF]);
          const n = caseNo++;
          const prefetch = n % 2 === 1 ? { ptr: other.ptr + 16 * n, bytes: [1000, 6 * 2 ** 20 + 77, 2 ** 20][n % 3] } : null;
          const how = `${what}${prefetch ? `, L2 prefetch of ${prefetch.bytes} bytes` : ''}`;
          const y = be.alloc([rows, outF]);
          be.matmulInto(xg as CudaTensor, wg as CudaTensor, bg as CudaTensor, y, rows, false, true, { prefetch });
          close(`gelu(x·Wᵀ + b) ${how}`, down(be, y), down(cpu, cpu.gelu(cpu.linear(xc, wc, bc))), tol(dtype, 1e-5));
          const raw = randn(rows * outF);
          const yf = be.upload(raw, [rows, outF], 'float32') as CudaTensor;
          const stats = outF % 16 === 0 ? be.alloc([rows, outF / 8], 'float32') : null;
          be.matmulInto(xg as CudaTensor, wg as CudaTensor, bg as CudaTensor, yf, rows, true, false, { statsOut: stats, prefetch });
          const got = down(be, yf);
          close(`float32 y += x·Wᵀ + b ${how}`, got, down(cpu, cpu.add(cpu.upload(raw, [rows, outF], 'float32'), cpu.linear(xc, wc, bc))), 1e-5);
          if (stats) {
            close(`row statistics ${what}`, down(be, stats), tileStatistics(got, rows, outF), 1e-5);
            be.release(stats);
          }
          for (const t of [xg, wg, bg, y, yf]) be.release(t as CudaTensor);
        }
      }
    } finally {
      [be.smemWeights, be.smemWeightsWarps, be.smemWeightsMinRows] = saved;
      be.release(other);
    }
  });

  test(`cuda ${dtype}: row statistics from a GEMM's epilogue, and the LayerNorm they feed fused into the next GEMM`, { skip }, () => {
    // The decoder's pattern: a GEMM adds into the float32 stream x and writes its row statistics; the
    // next GEMM normalizes x with them in its prologue (bf16, up to fuseLayerNormRows rows; beyond that,
    // and in float32, the LayerNorm kernel and a plain GEMM).
    const be = cudaFor(dtype);
    const statsHere = dtype === 'bfloat16';
    for (const [rows, inF, outF, mid] of [[1, 2048, 517, 96], [5, 320, 100, 64], [16, 2048, 35, 160], [9, 256, 2048, 32], [3, 8192, 48, 128]]) {
      const what = `${rows}x${inF}x${outF}`;
      const raw = Float32Array.from(randn(rows * inF), (v, i) => 3 * v + (i % 7) - 2); // rows off zero mean
      const x = be.upload(raw, [rows, inF], 'float32') as CudaTensor;
      const [ag, ac] = pair(be, randn(rows * mid), [rows, mid]);
      const [pg, pc] = pair(be, randn(inF * mid, 0.3), [inF, mid]);
      const stats = statsHere ? be.alloc([rows, inF / 8], 'float32') : null;
      assert.equal(be.rowStatsFrom(rows, mid, inF), statsHere, 'row statistics where skinny_gemm.cu runs');
      be.matmulInto(ag as CudaTensor, pg as CudaTensor, null, x, rows, true, false, { statsOut: stats });
      const xSum = down(cpu, cpu.add(cpu.upload(raw, [rows, inF], 'float32'), cpu.linear(ac, pc, null)));
      close(`x += a·Pᵀ ${what}`, down(be, x), xSum, 1e-5);
      if (stats) {
        // Each (row, 16 columns): mean and sum of squared deviations of the float32 values written.
        close(`row statistics ${what}`, down(be, stats), tileStatistics(down(be, x), rows, inF), 1e-5);
      }
      const xc = cpu.upload(xSum, [rows, inF], 'float32');
      const [lwg, lwc] = pair(be, Float32Array.from(randn(inF), (v) => 1 + 0.3 * v), [inF]);
      const [lbg, lbc] = pair(be, randn(inF, 0.5), [inF]);
      const [wg, wc] = pair(be, randn(outF * inF, 0.05), [outF, inF]);
      const [bg, bc] = pair(be, randn(outF), [outF]);
      // h holds a sentinel until a LayerNorm kernel writes it (the prologue modes run first).
      const h = be.upload(new Float32Array(rows * inF).fill(-7.5), [rows, inF], be.activationDType) as CudaTensor, y = be.alloc([rows, outF]);
      const ln = { w: lwg as CudaTensor, b: lbg as CudaTensor, eps: 1e-5 };
      const hRef = cpu.layerNorm(xc, lwc, lbc, 1e-5);
      // The three ways: in the GEMM's prologue (≤ fuseLayerNormRows rows), a kernel normalizing from the
      // statistics, a kernel computing its own.
      // The prologue at up to 8 rows here (the default fuses only one), so that several rows are checked.
      const saved = [be.fuseLayerNorm, be.layerNormFromStats, be.fuseLayerNormRows] as const;
      for (const [fuse, fromStats, how] of [[true, true, 'prologue'], [false, true, 'stats kernel'], [false, false, 'plain kernel']] as const) {
        be.fuseLayerNorm = fuse;
        be.layerNormFromStats = fromStats;
        be.fuseLayerNormRows = 8;
        try {
          // A fused LayerNorm never writes h: a sentinel left in it shows the prologue ran.
          const prologue = fuse && statsHere && rows <= 8;
          be.layerNormMatmulInto(x, ln, h, wg as CudaTensor, bg as CudaTensor, y, rows, false, true, stats);
          if (prologue) assert.ok(down(be, h).every((v) => v === -7.5), `${what}: the LayerNorm ran in the GEMM's prologue (h untouched)`);
          close(`gelu(LN(x)·Wᵀ + b) ${what}, ${how}`, down(be, y), down(cpu, cpu.gelu(cpu.linear(hRef, wc, bc))), tol(dtype, 1e-5));
          const yRaw = randn(rows * outF);
          const yf = be.upload(yRaw, [rows, outF], 'float32') as CudaTensor;
          be.layerNormMatmulInto(x, { ...ln, b: null }, h, wg as CudaTensor, null, yf, rows, true, false, stats);
          close(`float32 y += LN(x)·Wᵀ ${what}, ${how}`, down(be, yf),
            down(cpu, cpu.add(cpu.upload(yRaw, [rows, outF], 'float32'), cpu.linear(cpu.layerNorm(xc, lwc, null, 1e-5), wc, null))), tol(dtype, 1e-5));
        } finally {
          [be.fuseLayerNorm, be.layerNormFromStats, be.fuseLayerNormRows] = saved;
        }
      }
    }
  });

  if (dtype === 'bfloat16') test(`cuda ${dtype}: few-row GEMMs and the LayerNorm prologue at forced block shapes (skinnyShape, the bench's GEMM table)`, { skip }, () => {
    // The bench's GEMM table (and any caller of skinnyShape) runs shapes skinnyPlan would not pick;
    // each splits K its own way over warps and load groups. Plain GEMMs (float32 y += x·Wᵀ + b with row statistics, one and
    // two row tiles, outF not a multiple of 16 where no statistics are written: clamped rows) and the
    // LayerNorm in the prologue (one row, GELU and bias, x off zero mean).
    const be = cudaFor(dtype);
    const shapes = [[4, 4], [8, 4], [8, 2], [16, 2], [16, 4]] as const;
    try {
      for (const [warps, unroll] of shapes) {
        for (const [rows, inF, outF] of [[1, 2048, 48], [16, 2048, 100], [3, 4096, 32], [1, 8192, 40], [2, 8192, 32]] as const) {
          if (rows > 8 && warps === 16 && unroll > 2) continue; // 128 registers a thread at 512 threads
          const what = `${rows}x${inF}x${outF} at w${warps}u${unroll}`;
          const [xg, xc] = pair(be, randn(rows * inF), [rows, inF]);
          const [wg, wc] = pair(be, randn(outF * inF, 0.05), [outF, inF]);
          const [bg, bc] = pair(be, randn(outF), [outF]);
          const raw = randn(rows * outF);
          const yf = be.upload(raw, [rows, outF], 'float32') as CudaTensor;
          const stats = outF % 16 === 0 ? be.alloc([rows, outF / 8], 'float32') : null;
          be.skinnyShape = { warps, unroll };
          try {
            be.matmulInto(xg as CudaTensor, wg as CudaTensor, bg as CudaTensor, yf, rows, true, false, { statsOut: stats });
          } finally {
            be.skinnyShape = null;
          }
          const got = down(be, yf);
          close(`float32 y += x·Wᵀ + b ${what}`, got, down(cpu, cpu.add(cpu.upload(raw, [rows, outF], 'float32'), cpu.linear(xc, wc, bc))), 1e-5);
          if (stats) {
            close(`row statistics ${what}`, down(be, stats), tileStatistics(got, rows, outF), 1e-5);
          }
          for (const t of [xg, wg, bg, yf]) be.release(t as CudaTensor);
          if (stats) be.release(stats);
        }
        // The LayerNorm prologue (the QKV, up and logits GEMMs of a one-row step): K 2048, and 4096
        // at 4 warps (4 chunks a lane).
        for (const [rows, inF, outF] of warps === 4 ? [[1, 2048, 100], [1, 4096, 48]] as const : [[1, 2048, 100]] as const) {
          const what = `${rows}x${inF}x${outF} with the LayerNorm in the prologue at w${warps}u${unroll}`;
          const rawX = Float32Array.from(randn(rows * inF), (v, i) => 3 * v + (i % 7) - 2);
          const x = be.upload(rawX, [rows, inF], 'float32') as CudaTensor;
          const stats = be.upload(tileStatistics(rawX, rows, inF), [rows, inF / 8], 'float32') as CudaTensor;
          const [lwg, lwc] = pair(be, Float32Array.from(randn(inF), (v) => 1 + 0.3 * v), [inF]);
          const [lbg, lbc] = pair(be, randn(inF, 0.5), [inF]);
          const [wg, wc] = pair(be, randn(outF * inF, 0.05), [outF, inF]);
          const [bg, bc] = pair(be, randn(outF), [outF]);
          const h = be.upload(new Float32Array(rows * inF).fill(-7.5), [rows, inF], 'bfloat16') as CudaTensor, y = be.alloc([rows, outF]);
          be.skinnyShape = { warps, unroll };
          try {
            be.layerNormMatmulInto(x, { w: lwg as CudaTensor, b: lbg as CudaTensor, eps: 1e-5 }, h, wg as CudaTensor, bg as CudaTensor, y, rows, false, true, stats);
          } finally {
            be.skinnyShape = null;
          }
          assert.ok(down(be, h).every((v) => v === -7.5), `${what}: the LayerNorm ran in the GEMM (h untouched)`);
          const hRef = cpu.layerNorm(cpu.upload(rawX, [rows, inF], 'float32'), lwc, lbc, 1e-5);
          close(`gelu(LN(x)·Wᵀ + b) ${what}`, down(be, y), down(cpu, cpu.gelu(cpu.linear(hRef, wc, bc))), tol(dtype, 1e-5));
          for (const t of [x, stats, lwg, lbg, wg, bg, h, y]) be.release(t as CudaTensor);
        }
      }
    } finally {
      be.skinnyShape = null;
    }
  });

  test(`cuda ${dtype}: fused QKV split + clamp + QK LayerNorm + cache write`, { skip }, () => {
    const be = cudaFor(dtype);
    const batch = 2, t = 13, d = 96, cap = 40, at = 7, clip = 0.8;
    const rows = batch * t;
    const [qkvg, qkvc] = pair(be, randn(rows * 3 * d), [rows, 3 * d]);
    const [qwg, qwc] = pair(be, Float32Array.from(randn(d), (v) => 1 + 0.3 * v), [d]);
    const [kwg, kwc] = pair(be, Float32Array.from(randn(d), (v) => 1 + 0.3 * v), [d]);
    const [kbg, kbc] = pair(be, randn(d), [d]);
    for (const kernel of ['qkv_split', 'qkv_split8']) {
      const q = be.alloc([rows, d]);
      const kc = be.zeros([batch, cap, d]) as CudaTensor, vc = be.zeros([batch, cap, d]) as CudaTensor;
      be.kernels.get('qkv.cu', kernel, be.defs()).launch([rows, 3], [kernel === 'qkv_split' ? be.rowThreads(d) : be.rowThreads8(d)], [(qkvg as CudaTensor).ptr, q.ptr, kc.ptr, vc.ptr,
        (qwg as CudaTensor).ptr, 0, (kwg as CudaTensor).ptr, (kbg as CudaTensor).ptr, t, d, cap, 0, at, clip, 1, 1e-5]);
      const clamped = cpu.clamp(qkvc, clip);
      const qRef = cpu.layerNorm(cpu.columns(clamped, 0, d), qwc, null, 1e-5);
      const kRef = cpu.layerNorm(cpu.columns(clamped, d, d), kwc, kbc, 1e-5);
      const kcRef = cpu.zeros([batch, cap, d]), vcRef = cpu.zeros([batch, cap, d]);
      cpu.writeRows(kcRef, cpu.view(kRef, [batch, t, d]), at);
      cpu.writeRows(vcRef, cpu.view(cpu.columns(clamped, 2 * d, d), [batch, t, d]), at);
      close(`${kernel}: q`, down(be, q), down(cpu, qRef), tol(dtype, 1e-5));
      close(`${kernel}: k cache`, down(be, kc), down(cpu, kcRef), tol(dtype, 1e-5));
      close(`${kernel}: v cache`, down(be, vc), down(cpu, vcRef), tol(dtype, 1e-7));
    }
  });

  if (dtype === 'bfloat16') test(`cuda ${dtype}: decode attention with the QKV split folded in (clamp and row statistics from the QKV GEMM)`, { skip }, () => {
    const be = cudaFor(dtype);
    // Head sizes of 2, 4 and 3 values a lane (the last without vector loads); contexts of one pass of
    // the 8 warps × 8 keys and of several; splits over the whole grid (perSplit 0) and chosen from the
    // context (only some of the grid working, or one block with no merge).
    const shapes = [
      { heads: 3, dHead: 64, cap: 50, pos: 37, runs: [[1, 0, true], [3, 0, true], [2, 0, false], [7, 0, true], [7, 16, true], [2, 128, true], [4, 8, false]] },
      { heads: 2, dHead: 128, cap: 150, pos: 137, runs: [[1, 0, true], [3, 64, true], [3, 128, false]] },
      { heads: 2, dHead: 72, cap: 100, pos: 90, runs: [[1, 0, false], [5, 20, true]] },
    ] as const;
    for (const { heads, dHead, cap, pos, runs } of shapes) {
      const batch = 3, d = heads * dHead, K = 96, clip = 0.8, eps = 1e-5;
      const [xg, xc] = pair(be, randn(batch * K), [batch, K]);
      const [wg, wc] = pair(be, randn(3 * d * K, 0.15), [3 * d, K]);
      const qkv = be.alloc([batch, 3 * d]), stats = be.alloc([batch, (3 * d) / 8], 'float32');
      be.matmulInto(xg as CudaTensor, wg as CudaTensor, null, qkv, batch, false, false, { statsOut: stats, clip });
      close('clamp(x·Wᵀ) from the epilogue', down(be, qkv), down(cpu, cpu.clamp(cpu.linear(xc, wc, null), clip)), tol(dtype));
      const qkvSeen = cpu.upload(down(be, qkv), [batch, 3 * d], 'float32');
      const [qwg, qwc] = pair(be, Float32Array.from(randn(d), (v) => 1 + 0.3 * v), [d]);
      const [kwg, kwc] = pair(be, Float32Array.from(randn(d), (v) => 1 + 0.3 * v), [d]);
      const [qbg, qbc] = pair(be, randn(d, 0.2), [d]);
      const [kbg, kbc] = pair(be, randn(d, 0.2), [d]);
      const kOld = randn(batch * cap * d), vOld = randn(batch * cap * d);
      const mask = new Int32Array(batch * cap).fill(1);
      for (let j = 0; j < 6; j++) mask[cap + j] = 0; // row 1 is left-padded
      const slopes = alibiSlopesFor(heads);
      const maxSplits = Math.max(...runs.map((r) => r[0]));
      const counters = be.zeros([batch * heads], 'int32') as CudaTensor, partial = be.alloc([batch * heads * maxSplits * (2 + dHead)], 'float32');
      // 8 keys a warp in flight (batch 1's choice), 4 (batch 16's) and 16 (a decoder option).
      for (const keysInFlight of [8, 4, 16]) for (const [splits, perSplit, qkLn] of runs) {
        const [kg, kRef] = pair(be, kOld, [batch, cap, d]);
        const [vg, vRef] = pair(be, vOld, [batch, cap, d]);
        const posDev = be.upload(Int32Array.of(pos), [1], 'int32') as CudaTensor;
        const out = be.alloc([batch, d]);
        be.decodeAttentionQkvInto({
          qkv, stats, qLn: qkLn ? { w: qwg as CudaTensor, b: qbg as CudaTensor } : null, kLn: qkLn ? { w: kwg as CudaTensor, b: kbg as CudaTensor } : null,
          kCache: kg as CudaTensor, vCache: vg as CudaTensor, mask: be.upload(mask, [batch, cap], 'int32') as CudaTensor,
          slopes: be.slopesOnDevice(slopes), out, batch, capacity: cap, posDev: posDev.ptr, nHeads: heads, dHead, eps, scale: 1 / Math.sqrt(dHead), splits,
          partial, counters, perSplit, keysInFlight,
        });
        assert.ok(down(be, counters).every((v) => v === 0), 'the split counters are left at zero');
        let q = cpu.columns(qkvSeen, 0, d), k = cpu.columns(qkvSeen, d, d);
        if (qkLn) { q = cpu.layerNorm(q, qwc, qbc, eps); k = cpu.layerNorm(k, kwc, kbc, eps); }
        cpu.writeRows(kRef, cpu.view(k, [batch, 1, d]), pos);
        cpu.writeRows(vRef, cpu.view(cpu.columns(qkvSeen, 2 * d, d), [batch, 1, d]), pos);
        const what = `head ${dHead}, ${pos + 1} keys, ${splits} split(s) of ${perSplit || 'all the'} keys, QK LayerNorm ${qkLn ? 'on' : 'off'}, ${keysInFlight} keys in flight`;
        close(`k cache, ${what}`, down(be, kg), down(cpu, kRef), tol(dtype, 1e-5));
        close(`v cache, ${what}`, down(be, vg), down(cpu, vRef), 1e-7);
        const want = cpu.attention({ q: cpu.view(q, [batch, 1, d]), k: kRef, v: vRef, kvLen: pos + 1, nHeads: heads, scale: 1 / Math.sqrt(dHead),
          alibiSlopes: slopes, keyMask: cpu.upload(mask, [batch, cap], 'int32') });
        close(`attention, ${what}`, down(be, out), down(cpu, want), tol(dtype, 1e-5));
      }
    }
  });

  // Attention: prefill (flash kernel in bf16), with padding, decode over a long cache (split keys), a
  // chunk of queries after a cache, and no ALiBi (learned-position models).
  const cases = [
    { name: 'prefill', batch: 2, tq: 77, kvLen: 77, cap: 77, heads: 3, dHead: 64, alibi: true, pad: 0 },
    { name: 'prefill, padded, 2 tiles', batch: 2, tq: 130, kvLen: 130, cap: 130, heads: 2, dHead: 128, alibi: true, pad: 9 },
    { name: 'decode, long cache', batch: 3, tq: 1, kvLen: 301, cap: 333, heads: 4, dHead: 128, alibi: true, pad: 5 },
    { name: 'chunk after cache, no ALiBi', batch: 2, tq: 5, kvLen: 200, cap: 210, heads: 4, dHead: 16, alibi: false, pad: 0 },
    { name: 'prefill, no ALiBi, head 16', batch: 1, tq: 45, kvLen: 45, cap: 50, heads: 4, dHead: 16, alibi: false, pad: 3 },
    { name: 'prefill, no ALiBi, head 128', batch: 2, tq: 130, kvLen: 130, cap: 140, heads: 2, dHead: 128, alibi: false, pad: 0 },
    { name: 'prefill, 2048 tokens', batch: 1, tq: 2048, kvLen: 2048, cap: 2048, heads: 2, dHead: 128, alibi: true, pad: 0 },
  ];
  for (const c of cases) {
    test(`cuda ${dtype}: attention ${c.name}`, { skip }, () => {
      const be = cudaFor(dtype);
      const d = c.heads * c.dHead;
      const [qg, qc] = pair(be, randn(c.batch * c.tq * d), [c.batch, c.tq, d]);
      const [kg, kc] = pair(be, randn(c.batch * c.cap * d), [c.batch, c.cap, d]);
      const [vg, vc] = pair(be, randn(c.batch * c.cap * d), [c.batch, c.cap, d]);
      const mask = new Int32Array(c.batch * c.cap).fill(1);
      for (let j = 0; j < c.pad; j++) mask[(c.batch - 1) * c.cap + j] = 0; // the last row is left-padded
      const slopes = c.alibi ? alibiSlopesFor(c.heads) : null;
      const args = { kvLen: c.kvLen, nHeads: c.heads, scale: 1 / Math.sqrt(c.dHead), alibiSlopes: slopes };
      const want = down(cpu, cpu.attention({ ...args, q: qc, k: kc, v: vc, keyMask: c.pad ? cpu.upload(mask, [c.batch, c.cap], 'int32') : null }));
      const maskG = c.pad ? be.upload(mask, [c.batch, c.cap], 'int32') : null;
      // Rows of padding queries are garbage in the original too: compare real query rows only.
      const real = (out: Float32Array) => out.filter((_, i) => {
        const row = Math.floor(i / d), b = Math.floor(row / c.tq), pos = c.kvLen - c.tq + (row % c.tq);
        return mask[b * c.cap + pos] === 1;
      });
      const got = down(be, be.attention({ ...args, q: qg, k: kg, v: vg, keyMask: maskG }));
      close(`attention ${c.name}`, real(got), real(want), tol(dtype, 1e-5));
      // The split decode kernel handles every case too (it is the float32 path and the decode path).
      const out = be.alloc([c.batch, c.tq, d]);
      be.attentionInto({ q: qg as CudaTensor, k: kg as CudaTensor, v: vg as CudaTensor, out, mask: maskG as CudaTensor | null,
        slopes: slopes ? be.slopesOnDevice(slopes) : null, batch: c.batch, tq: c.tq, capacity: c.cap, kvLen: c.kvLen, kvLenDev: 0,
        nHeads: c.heads, dHead: c.dHead, qStride: d, kvStride: d, oStride: d, scale: args.scale, splits: 3, forceDecode: true });
      close(`attention ${c.name}, split decode kernel`, real(down(be, out)), real(want), tol(dtype, 1e-5));
    });
  }

  // Every compile-time shape of flash_forward (flash.ts) on what only prefill has: queries after a cache
  // (positions offset by kvLen − tq), left padding, a cache larger than kvLen; with and without ALiBi.
  if (dtype === 'bfloat16') {
    test('cuda bfloat16: every flash forward shape does a padded prefill chunk after a cache', { skip }, () => {
      const be = cudaFor(dtype);
      const batch = 2, tq = 150, kvLen = 211, cap = 230, heads = 2, dHead = 128, d = heads * dHead, pad = 13;
      const [qg, qc] = pair(be, randn(batch * tq * d), [batch, tq, d]);
      const [kg, kc] = pair(be, randn(batch * cap * d), [batch, cap, d]);
      const [vg, vc] = pair(be, randn(batch * cap * d), [batch, cap, d]);
      const mask = new Int32Array(batch * cap).fill(1);
      for (let j = 0; j < pad; j++) mask[cap + j] = 0; // the second sequence is left-padded
      const maskG = be.upload(mask, [batch, cap], 'int32') as CudaTensor;
      for (const alibi of [true, false]) {
        const slopes = alibi ? alibiSlopesFor(heads) : null;
        const args = { kvLen, nHeads: heads, scale: 1 / Math.sqrt(dHead), alibiSlopes: slopes };
        const want = down(cpu, cpu.attention({ ...args, q: qc, k: kc, v: vc, keyMask: cpu.upload(mask, [batch, cap], 'int32') }));
        for (const shape of FLASH_FORWARD_SHAPES) {
          const out = be.alloc([batch, tq, d]);
          launchFlashForward(be.kernels, {
            q: (qg as CudaTensor).ptr, k: (kg as CudaTensor).ptr, v: (vg as CudaTensor).ptr, mask: maskG.ptr,
            slopes: slopes ? be.slopesOnDevice(slopes).ptr : 0, out: out.ptr, lse: 0, batch, nHeads: heads, dHead, tq,
            capacity: cap, kvLen, qStride: d, kvStride: d, oStride: d, scale: args.scale,
          }, shape);
          close(`flash_forward ${JSON.stringify(shape)}${alibi ? '' : ', no ALiBi'}`, down(be, out), want, tol(dtype));
        }
      }
    });
  }

  test(`cuda ${dtype}: argmax and top-k / top-p sampling on the GPU match their twins`, { skip }, () => {
    const be = cudaFor(dtype);
    const rows = 5, vocab = 50277;
    const logits = be.upload(randn(rows * vocab, 3), [rows, vocab], be.activationDType) as CudaTensor;
    const seen = down(be, logits);
    const greedy = be.sample(logits, { temperature: 0 });
    for (let r = 0; r < rows; r++) assert.equal(greedy[r], argmax(seen.subarray(r * vocab, (r + 1) * vocab)), `argmax row ${r}`);
    const settings = [
      { temperature: 1, topK: 0, topP: 1 }, { temperature: 0.7, topK: 40, topP: 1 }, { temperature: 1.3, topK: 0, topP: 0.9 },
      { temperature: 0.8, topK: 50, topP: 0.95 }, { temperature: 1, topK: 1, topP: 1 },
    ];
    for (const s of settings) {
      for (let step = 0; step < 6; step++) {
        const seed = 1234 + step * 7;
        const got = be.sample(logits, { ...s, seed, step });
        for (let r = 0; r < rows; r++) {
          // Exact, unless the draw falls within float32 rounding (1e-5 of the mass) of a boundary between two tokens.
          const fair = sampleTwinCandidates(seen.subarray(r * vocab, (r + 1) * vocab), s, seed, r, step, 1e-5);
          assert.ok(fair.includes(got[r]), `sample ${JSON.stringify(s)} step ${step} row ${r}: got ${got[r]}, the twin allows ${fair}`);
        }
      }
    }
  });
}
