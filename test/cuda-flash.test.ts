// The tensor-core attention backward (flash.ts, kernels/flash_backward.cu, flash_backward_wgmma.cu) in
// each mode and chunk, against the CPU backend's attention backward (the reference) on fresh random
// inputs: dk/dv storing dsᵀ and dq from it in 128-query blocks (chunks of 16, 32 and 64 keys), and dq
// recomputed; dk/dv by mma.sync and, where it runs (sm_90a, heads of 64 or 128), by wgmma, and there dq
// from the stored dsᵀ by wgmma too (after either dk/dv kernel; bit for bit the mma.sync pass's dq), and by
// the warp-specialized flash_backward_dkdv_fa3 in three ring shapes and four with its consumers in
// ping-pong (FB_PINGPONG: one and two turns a tile, 2 to 4 stages; bit for bit the wgmma kernel's dk, dv
// and, through the dsᵀ it stores, dq), the same with K, V, Q and dO loaded by TMA (FB_TMA: 'fa3', the
// default, and two '-tma' shapes; 'fa3-s3-g16-pp1' is the default's cp.async twin; the same bits again:
// the tensor maps' 128-byte swizzle must write the hand-swizzled layout and read rows past t as zeros), and dq by the warp-specialized flash_backward_dq_fa3 in four shapes
// (1 or 2 query tiles a consumer, 2 or 3 consumers, head groups, persistent on 2 or 3 blocks so that each
// block walks many items, heads in reverse order: bit for bit the mma.sync dq pass's dq). Sizes that are not multiples of 64 or 128 rows (a last block's
// consumer 1 then has a partial key tile, t = 77, 200, or no keys at all, t = 320, 150: the ping-pong's
// idle turns), head sizes 32, 64 and 128, batch > 1, with and without ALiBi. The dsᵀ scratch is filled
// with NaN first, so a block the dk/dv kernel fails to write poisons dq. The backward must be
// deterministic: a second run gives the same bits. The row term D = dO·o, by both its kernels, against a
// float64 sum. Skipped where no GPU is usable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CudaTensor } from '../src/backend/cuda/index.js';
import { trainingBackend, type AttentionArgs, type Tensor } from '../src/backend/backend.js';
import {
  fa3DkdvShape, fa3DqShape, flashBackwardScratchElements, wgmmaUsable, launchFlashBackward, launchRowDot, type FlashDkdvKernel, type FlashDqKernel,
} from '../src/backend/cuda/flash.js';
import { alibiSlopesFor, asStored, close, columnBlock, cpu, cudaFor, down, pair, randn, skip } from './cuda-harness.js';

/**
 * got and want equal element by element (kernels that sum the same products in the same order), NaN
 * counted as a difference. Unlike cuda-harness's sameBits, +0 and −0 count as equal, as they did when
 * these checks were first run on the device (the stricter comparison has not run there).
 */
function sameValues(what: string, got: Float32Array, want: Float32Array, of: string): void {
  const differ = got.filter((x, i) => x !== want[i]).length;
  assert.equal(differ, 0, `${what}: ${differ} elements differ from ${of}`);
}

// The row term D[b, h, i] = dO_i·o_i by both kernels (launchRowDot: 16-byte lanes, and the scalar warp a
// (row, head)) against a float64 sum of the values the GPU holds, D filled with NaN first so that an
// unwritten element fails. Head size 40 is not a power of two times 8: 'vector' falls back to the scalar
// kernel there. [batch, t, heads, head size, dtype]
const rowDotCases: Array<[number, number, number, number, 'bfloat16' | 'float32']> = [
  [2, 150, 3, 128, 'bfloat16'], [1, 77, 2, 64, 'bfloat16'], [2, 33, 3, 40, 'bfloat16'], [1, 45, 2, 64, 'float32'], [3, 7, 5, 8, 'float32'],
];
for (const [batch, t, heads, dHead, dtype] of rowDotCases) {
  test(`cuda ${dtype}: the backward's row term D = dO·o, both kernels, ${batch}×${t} tokens, ${heads} heads of ${dHead}`, { skip }, () => {
    const be = cudaFor(dtype), n = batch * t * heads * dHead;
    const g = asStored(randn(n), dtype), o = asStored(randn(n), dtype);
    const want = new Float32Array(batch * heads * t);
    for (let b = 0; b < batch; b++) for (let i = 0; i < t; i++) for (let h = 0; h < heads; h++) {
      let s = 0;
      for (let c = 0; c < dHead; c++) { const at = ((b * t + i) * heads + h) * dHead + c; s += g[at] * o[at]; }
      want[(b * heads + h) * t + i] = s;
    }
    const gd = be.upload(g, [batch * t, heads * dHead], dtype) as CudaTensor, od = be.upload(o, [batch * t, heads * dHead], dtype) as CudaTensor;
    for (const kernel of ['vector', 'scalar'] as const) {
      const D = be.upload(new Float32Array(want.length).fill(NaN), [batch, heads, t], 'float32') as CudaTensor;
      launchRowDot(be.kernels, dtype === 'bfloat16', { dOut: gd.ptr, out: od.ptr, D: D.ptr, batch, t, nHeads: heads, dHead }, kernel);
      close(`D (${kernel} kernel)`, down(be, D), want, 1e-6);
      be.release(D);
    }
  });
}

// [batch, t, heads, head size, ALiBi]
const cases: Array<[number, number, number, number, boolean]> = [
  [2, 200, 2, 128, true],   // 200: 4 tiles of 64 (the last partial), 2 blocks of 128 (the last partial)
  [1, 320, 2, 128, false],  // 320: 5 whole tiles of 64, a 128-row block with a single 64-row tile
  [2, 130, 3, 32, true],    // 130: a block of 128 with 2 live rows, head size 32
  [1, 77, 1, 128, true],    // fewer rows than one block
  [2, 150, 2, 64, true],    // head size 64: one swizzled column block in the wgmma kernel
];

for (const [batch, t, heads, dHead, alibi] of cases) {
  test(`cuda bfloat16: flash backward, every mode and chunk, ${batch}×${t} tokens, ${heads} heads of ${dHead}${alibi ? '' : ', no ALiBi'}`, { skip }, () => {
    const be = cudaFor('bfloat16'), g = trainingBackend(be), d = heads * dHead, scale = 1 / Math.sqrt(dHead);
    const slopes = alibi ? alibiSlopesFor(heads) : null;
    const [qg, qc] = pair(be, randn(batch * t * d), [batch, t, d]);
    const [kg, kc] = pair(be, randn(batch * t * d), [batch, t, d]);
    const [vg, vc] = pair(be, randn(batch * t * d), [batch, t, d]);
    const [dg, dc] = pair(be, randn(batch * t * d), [batch, t, d]);
    const args = (q: Tensor, k: Tensor, v: Tensor): AttentionArgs => ({ q, k, v, kvLen: t, nHeads: heads, scale, alibiSlopes: slopes, keyMask: null });
    const fc = cpu.attentionForTraining(args(qc, kc, vc));
    const want = cpu.attentionBackward(args(qc, kc, vc), fc.out, fc.logSumExp, dc);
    // The GPU's own forward and row term D = dO·o, as training.ts feeds the backward.
    const fg = g.attentionForTraining(args(qg, kg, vg));
    const ptr = (x: Tensor) => (x as CudaTensor).ptr;
    const D = be.alloc([batch, heads, t], 'float32');
    launchRowDot(be.kernels, true, { dOut: ptr(dg), out: ptr(fg.out), D: D.ptr, batch, t, nHeads: heads, dHead });
    const scratch = flashBackwardScratchElements(batch, heads, t);
    const run = (stored: boolean, chunk: number, kernel: FlashDkdvKernel, dqKernel: FlashDqKernel) => {
      const ds = stored ? be.upload(new Float32Array(scratch).fill(NaN), [scratch], 'bfloat16') as CudaTensor : null;
      const out = { dq: be.alloc([batch, t, d]), dk: be.alloc([batch, t, d]), dv: be.alloc([batch, t, d]) };
      launchFlashBackward(be.kernels, {
        q: ptr(qg), k: ptr(kg), v: ptr(vg), dOut: ptr(dg), lse: ptr(fg.logSumExp), D: D.ptr, slopes: slopes ? be.slopesOnDevice(slopes).ptr : 0,
        dq: out.dq.ptr, dk: out.dk.ptr, dv: out.dv.ptr, batch, t, nHeads: heads, dHead, scale, ds: ds?.ptr ?? 0,
      }, chunk, 'both', kernel, dqKernel);
      const got = { dq: down(be, out.dq), dk: down(be, out.dk), dv: down(be, out.dv) };
      if (ds) be.release(ds);
      for (const x of Object.values(out)) be.release(x);
      return got;
    };
    const modes: Array<[boolean, number, FlashDkdvKernel, FlashDqKernel]> = [
      [true, 64, 'mma', 'mma'], [true, 32, 'mma', 'mma'], [true, 16, 'mma', 'mma'], [false, 64, 'mma', 'mma'], [false, 32, 'mma', 'mma'],
    ];
    if (wgmmaUsable(be.kernels, dHead)) {
      modes.push([true, 64, 'wgmma', 'mma'], [false, 64, 'wgmma', 'mma'], [true, 64, 'mma', 'wgmma'], [true, 64, 'wgmma', 'wgmma'],
        [true, 64, 'wgmma-head-major', 'wgmma'], [false, 64, 'wgmma-head-major', 'mma'],
        [true, 64, 'fa3', 'mma'], [false, 64, 'fa3', 'mma'], [true, 64, 'fa3-s2-g1', 'wgmma'], [true, 64, 'fa3-s4-g3', 'wgmma'],
        [true, 64, 'fa3-s3-g16-pp', 'mma'], [true, 64, 'fa3-s2-g1-pp', 'wgmma'], [false, 64, 'fa3-s4-g16-pp', 'mma'], [true, 64, 'fa3-s3-g3-pp1', 'mma'],
        [true, 64, 'fa3', 'fa3'], [true, 64, 'wgmma', 'fa3-c2-t1-s3-g3'], [true, 64, 'wgmma-head-major', 'fa3-c2-t2-s2-p3'],
        [true, 64, 'fa3', 'fa3-c3-t1-s5-p2'], [true, 64, 'fa3', 'fa3-c2-t2-s4-r'], [true, 64, 'wgmma', 'fa3-c2-t2-s3-p3-r'],
        [true, 64, 'fa3-s3-g16-pp1', 'mma'], [false, 64, 'fa3-s2-g1-tma', 'mma'], [true, 64, 'fa3-s4-g3-pp-tma', 'wgmma']);
    }
    // dq of the mma.sync pass from the wgmma dk/dv's dsᵀ: the wgmma dq pass sums the same products in the
    // same order, so it must give the same bits.
    let dqOfMma: Float32Array | null = null;
    // dk, dv of the wgmma kernel: flash_backward_dkdv_fa3 runs the same per-tile code in the same query
    // order, so its dk, dv (and the dsᵀ the dq pass reads) must be the same bits.
    let wgmmaDkdv: { dk: Float32Array; dv: Float32Array } | null = null;
    for (const [stored, chunk, kernel, dqKernel] of modes) {
      const what = `${stored ? `dq from stored ds (${dqKernel})` : 'dq recomputed'}, ${kernel !== 'mma' ? `dk/dv on ${kernel}` : `chunk ${chunk}`}`;
      const got = run(stored, chunk, kernel, dqKernel);
      for (const name of ['dq', 'dk', 'dv'] as const) close(`${name}, ${what}`, got[name], down(cpu, want[name]), 2e-2);
      if (stored && kernel === 'wgmma' && dqKernel === 'mma') { dqOfMma = got.dq; wgmmaDkdv = { dk: got.dk, dv: got.dv }; }
      if (kernel.startsWith('fa3') && wgmmaDkdv) {
        for (const name of ['dk', 'dv'] as const) {
          sameValues(`${name}, ${what}`, got[name], wgmmaDkdv[name], "flash_backward_dkdv_wgmma's");
        }
        if (stored && dqKernel === 'mma') {
          sameValues(`dq, ${what}`, got.dq, dqOfMma!, "dq of flash_backward_dkdv_wgmma's dsᵀ");
        }
      }
      if (stored && kernel !== 'mma' && dqKernel !== 'mma' && dqOfMma) {
        sameValues(`dq, ${what}`, got.dq, dqOfMma, 'the mma.sync dq pass on the same dsᵀ');
      }
      const again = run(stored, chunk, kernel, dqKernel);
      for (const name of ['dq', 'dk', 'dv'] as const) {
        assert.ok(got[name].every((x, i) => Object.is(x, again[name][i])), `${name}, ${what}: a second run differs (not deterministic)`);
      }
    }
  });
}

// The dk/dv kernel names (MPT_CUDA_DKDV, the bench): which fa3 shapes parse, and to what (no GPU needed).
test('fa3DkdvShape: stages, head groups and ping-pong turns from a name; anything else is not an fa3 name', () => {
  assert.deepEqual(fa3DkdvShape('fa3'), { stages: 3, headGroup: 16, pingpong: 1, tma: true });
  assert.deepEqual(fa3DkdvShape('fa3-s4-g16'), { stages: 4, headGroup: 16 });
  assert.deepEqual(fa3DkdvShape('fa3-s3-g16-pp'), { stages: 3, headGroup: 16, pingpong: 2 });
  assert.deepEqual(fa3DkdvShape('fa3-s2-g1-pp1'), { stages: 2, headGroup: 1, pingpong: 1 });
  assert.deepEqual(fa3DkdvShape('fa3-s3-g16-pp1-tma'), { stages: 3, headGroup: 16, pingpong: 1, tma: true });
  assert.deepEqual(fa3DkdvShape('fa3-s2-g1-tma'), { stages: 2, headGroup: 1, tma: true });
  for (const name of ['fa3-s5-g16', 'fa3-s1-g16', 'fa3-s3-g0', 'fa3-s3-g16-pp2', 'fa3-s3-g16-', 'fa3-pp', 'wgmma', 'fa3-tma', 'fa3-s3-g16-tma-pp1']) {
    assert.equal(fa3DkdvShape(name), undefined, name);
  }
});

// dk and dv written into column blocks of a [batch·t, 3·d] buffer (dkWidths / dvWidths 3, the fused Wqkv
// backward's layout: dk at columns d..2d, dv at 2d..3d) by every dk/dv kernel: the same bits as the
// kernel's contiguous dk and dv (only the store's address changes), dq unchanged, and the buffer's other
// columns (filled with NaN) untouched.
const stridedCases: Array<[number, number, number, number]> = [[2, 200, 2, 128], [2, 150, 2, 64], [2, 130, 3, 32]];
for (const [batch, t, heads, dHead] of stridedCases) {
  test(`cuda bfloat16: flash backward dk/dv into column blocks of a [rows, 3d] buffer, ${batch}×${t} tokens, ${heads} heads of ${dHead}`, { skip }, () => {
    const be = cudaFor('bfloat16'), g = trainingBackend(be), d = heads * dHead, rows = batch * t, scale = 1 / Math.sqrt(dHead);
    const slopes = alibiSlopesFor(heads);
    const [q, k, v, dOut] = [0, 1, 2, 3].map(() => pair(be, randn(rows * d), [batch, t, d])[0]);
    const fg = g.attentionForTraining({ q, k, v, kvLen: t, nHeads: heads, scale, alibiSlopes: slopes, keyMask: null });
    const ptr = (x: Tensor) => (x as CudaTensor).ptr;
    const D = be.alloc([batch, heads, t], 'float32');
    launchRowDot(be.kernels, true, { dOut: ptr(dOut), out: ptr(fg.out), D: D.ptr, batch, t, nHeads: heads, dHead });
    const scratch = be.alloc([flashBackwardScratchElements(batch, heads, t)], 'bfloat16');
    const run = (kernel: FlashDkdvKernel, strided: 'dk and dv' | 'dv' | null) => {
      const dq = be.alloc([batch, t, d]);
      const buffer = be.upload(new Float32Array(rows * 3 * d).fill(NaN), [rows, 3 * d], 'bfloat16') as CudaTensor;
      const own = { dk: be.alloc([batch, t, d]), dv: be.alloc([batch, t, d]) };
      const dkInBuffer = strided === 'dk and dv', dvInBuffer = strided !== null;
      launchFlashBackward(be.kernels, {
        q: ptr(q), k: ptr(k), v: ptr(v), dOut: ptr(dOut), lse: ptr(fg.logSumExp), D: D.ptr, slopes: be.slopesOnDevice(slopes).ptr, dq: dq.ptr,
        dk: dkInBuffer ? buffer.ptr + d * 2 : own.dk.ptr, dv: dvInBuffer ? buffer.ptr + 2 * d * 2 : own.dv.ptr,
        batch, t, nHeads: heads, dHead, scale, ds: scratch.ptr, dkWidths: dkInBuffer ? 3 : undefined, dvWidths: dvInBuffer ? 3 : undefined,
      }, 64, 'both', kernel, 'mma');
      const all = down(be, buffer);
      const column = (c: number) => columnBlock(all, rows, d, c);
      // The buffer's columns no kernel was given: dq's, and dk's when dk has a tensor of its own.
      const untouched = dkInBuffer ? [column(0)] : [column(0), column(1)];
      const got = { dq: down(be, dq), dk: dkInBuffer ? column(1) : down(be, own.dk), dv: dvInBuffer ? column(2) : down(be, own.dv), untouched };
      for (const x of [dq, buffer, own.dk, own.dv]) be.release(x);
      return got;
    };
    const kernels: FlashDkdvKernel[] = ['mma'];
    if (wgmmaUsable(be.kernels, dHead)) kernels.push('wgmma', 'wgmma-head-major', 'fa3', 'fa3-s2-g1', 'fa3-s3-g16-pp', 'fa3-s3-g16-pp1');
    for (const kernel of kernels) {
      const want = run(kernel, null);
      for (const strided of ['dk and dv', 'dv'] as const) {
        const got = run(kernel, strided), what = `${kernel}, ${strided} in the buffer`;
        for (const name of ['dq', 'dk', 'dv'] as const) sameValues(`${name}, ${what}`, got[name], want[name], 'the contiguous outputs');
        assert.ok(got.untouched.every((c) => c.every(Number.isNaN)), `${what}: columns of the buffer that no output belongs to were written`);
      }
    }
    be.release(scratch);
  });
}

// The dq pass names (MPT_CUDA_DQ, the bench): which fa3 shapes parse, and to what (no GPU needed).
test('fa3DqShape: consumers, tiles, stages, head groups and persistence from a name; anything else or what does not fit is undefined', () => {
  assert.deepEqual(fa3DqShape('fa3-c2-t1-s6'), { consumers: 2, tiles: 1, stages: 6, headGroup: 1 });
  assert.deepEqual(fa3DqShape('fa3-c3-t1-s5-g16'), { consumers: 3, tiles: 1, stages: 5, headGroup: 16 });
  assert.deepEqual(fa3DqShape('fa3-c2-t2-s4-p'), { consumers: 2, tiles: 2, stages: 4, headGroup: 1, persistent: true });
  assert.deepEqual(fa3DqShape('fa3-c2-t2-s2-p3'), { consumers: 2, tiles: 2, stages: 2, headGroup: 1, persistent: 3 });
  assert.deepEqual(fa3DqShape('fa3-c2-t2-s4-p-r'), { consumers: 2, tiles: 2, stages: 4, headGroup: 1, persistent: true, reverse: true });
  assert.deepEqual(fa3DqShape('fa3-c2-t2-s4-g8-r'), { consumers: 2, tiles: 2, stages: 4, headGroup: 8, reverse: true });
  assert.ok(fa3DqShape('fa3'));
  // 3 consumers of 2 tiles (160 registers a consumer), 5 stages of 48 KB, and malformed names
  for (const name of ['fa3-c3-t2-s3', 'fa3-c2-t2-s5', 'fa3-c4-t1-s3', 'fa3-c2-t1-s1', 'fa3-c2-t1-s3-g0', 'fa3-c2-t1-s3-p0', 'fa3-c2-t1', 'fa3-c2-t1-s3-r-p', 'wgmma', 'mma']) {
    assert.equal(fa3DqShape(name), undefined, name);
  }
});
