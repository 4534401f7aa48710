// The warpgroup-MMA attention forward (kernels/flash_forward_fa3.cu, warp-specialized with a producer
// ring: every wgmma shape of flash.ts) against the CPU backend's attention (the reference) on fresh
// random inputs: training (queries = keys, with the log-sum-exp) and prefill (a chunk of queries after a
// cache longer than kvLen, left padding), lengths that are not multiples of 64 or 128, fewer rows than
// one warpgroup, batch > 1, more (batch, head) pairs than a block-order group, head sizes 64 and 128,
// ALiBi on and off; the persistent kernel (the training default) also on a few blocks
// (FLASH_FORWARD_TEST_SHAPES: every block runs many items back to back, and every launch must leave the
// kernel's ticket counter at 0 for the next one, or the next launch would skip items and leave NaN); the
// shapes with TMA loads (tensor maps with the 128-byte swizzle in place of the hand-swizzled cp.async, 3-D
// maps whose rows past a sequence's end read as zeros) on the same cases. Outputs and lse are filled with
// NaN first, so a row the kernel fails to write fails the check; in prefill the cache rows past kvLen hold
// NaN, so a key tile that reads them instead of zeros (0·NaN in P·V) fails it too. Skipped where no GPU is usable, or where wgmma cannot run (not an H100-class
// sm_90a chip: flash.ts then launches the mma.sync fallback, which cuda-kernels.test.ts checks).
import { test } from 'node:test';
import type { CudaTensor } from '../src/backend/cuda/index.js';
import {
  FLASH_FORWARD_SHAPES, FLASH_FORWARD_TEST_SHAPES, flashShapeLabel, launchFlashForward, wgmmaUsable, type FlashWgmmaShape,
} from '../src/backend/cuda/flash.js';
import { alibiSlopesFor, close, cpu, cudaFor, down, pair, randn, skip } from './cuda-harness.js';

const shapes = [...FLASH_FORWARD_SHAPES.filter((s): s is FlashWgmmaShape => 'wgmma' in s), ...FLASH_FORWARD_TEST_SHAPES];
const wgmmaSkip = skip || (wgmmaUsable(cudaFor('bfloat16').kernels, 128) ? false : 'wgmma needs an sm_90a GPU (H100)');

// [batch, t, heads, head size, ALiBi]
const training: Array<[number, number, number, number, boolean]> = [
  [2, 200, 2, 128, true],   // 200: 3 whole 64-row warpgroups and 8 rows; 128-key tiles with a partial one
  [1, 333, 2, 128, false],  // several query blocks, the last partial, no ALiBi
  [2, 77, 3, 64, true],     // head size 64; with 2 or 3 warpgroups a block some warpgroups have no rows
  [1, 700, 1, 128, true],   // many key tiles a row: the running max and the rescale of O
  [2, 1030, 1, 128, true],  // the fa3 ring goes round several times (9 to 17 tiles a row), a partial last tile
  [2, 300, 19, 64, true],   // 38 (batch, head) pairs: fa3's block order in groups of 16 and 32 heads, the last group partial
];

for (const [batch, t, heads, dHead, alibi] of training) {
  test(`cuda bfloat16: wgmma flash forward with lse, ${batch}×${t} tokens, ${heads} heads of ${dHead}${alibi ? '' : ', no ALiBi'}`, { skip: wgmmaSkip }, () => {
    const be = cudaFor('bfloat16'), d = heads * dHead, scale = 1 / Math.sqrt(dHead);
    const slopes = alibi ? alibiSlopesFor(heads) : null;
    const [qg, qc] = pair(be, randn(batch * t * d), [batch, t, d]);
    const [kg, kc] = pair(be, randn(batch * t * d), [batch, t, d]);
    const [vg, vc] = pair(be, randn(batch * t * d), [batch, t, d]);
    const want = cpu.attentionForTraining({ q: qc, k: kc, v: vc, kvLen: t, nHeads: heads, scale, alibiSlopes: slopes, keyMask: null });
    const wantOut = down(cpu, want.out), wantLse = down(cpu, want.logSumExp);
    const slopesDev = slopes ? be.slopesOnDevice(slopes).ptr : 0;
    for (const shape of shapes) {
      const out = be.upload(new Float32Array(batch * t * d).fill(NaN), [batch, t, d], 'bfloat16') as CudaTensor;
      const lse = be.upload(new Float32Array(batch * heads * t).fill(NaN), [batch, heads, t], 'float32') as CudaTensor;
      launchFlashForward(be.kernels, {
        q: (qg as CudaTensor).ptr, k: (kg as CudaTensor).ptr, v: (vg as CudaTensor).ptr, mask: 0, slopes: slopesDev, out: out.ptr, lse: lse.ptr,
        batch, nHeads: heads, dHead, tq: t, capacity: t, kvLen: t, qStride: d, kvStride: d, oStride: d, scale,
      }, shape);
      close(`out, ${flashShapeLabel(shape)}`, down(be, out), wantOut, 1e-2);
      // lse is float32 from bf16 inputs: as tight as the mma.sync kernel's check (cuda-train-ops.test.ts).
      close(`lse, ${flashShapeLabel(shape)}`, down(be, lse), wantLse, 1e-5);
      be.release(out); be.release(lse);
    }
  });
}

// Prefill: tq queries at positions kvLen − tq …, keys in a [batch, capacity] cache, the second sequence
// left-padded (its first `pad` keys masked), query rows strided inside a wider buffer as index.ts passes
// them (q, k and v are column slices of one fused row).
// [batch, tq, kvLen, capacity, heads, head size, pad]
const prefill: Array<[number, number, number, number, number, number, number]> = [
  [2, 150, 211, 230, 2, 128, 13],
  [2, 5, 200, 210, 4, 128, 0],    // a decode-sized chunk after a long cache: one warpgroup with 5 live rows
  [1, 130, 130, 140, 2, 64, 9],   // head size 64, queries = keys, padded
];

for (const [batch, tq, kvLen, cap, heads, dHead, pad] of prefill) {
  test(`cuda bfloat16: wgmma flash forward, prefill ${batch}×${tq} queries after ${kvLen - tq} cached (capacity ${cap}), ${heads} heads of ${dHead}, ${pad} padded`, { skip: wgmmaSkip }, () => {
    const be = cudaFor('bfloat16'), d = heads * dHead, scale = 1 / Math.sqrt(dHead);
    // q rows live in a [batch, tq, 3d] buffer (stride 3d), k and v in [batch, cap, 2d] (stride 2d).
    const qWide = randn(batch * tq * 3 * d), kvWide = randn(batch * cap * 2 * d);
    // Cache rows [kvLen, capacity) are not keys: NaN there must never reach the output.
    for (let b = 0; b < batch; b++) kvWide.fill(NaN, (b * cap + kvLen) * 2 * d, (b + 1) * cap * 2 * d);
    const [qg] = pair(be, qWide, [batch, tq, 3 * d]);
    const [kvg] = pair(be, kvWide, [batch, cap, 2 * d]);
    const slice = (x: Float32Array, rows: number, width: number, from: number) => {
      const y = new Float32Array(rows * d);
      for (let r = 0; r < rows; r++) y.set(x.subarray(r * width + from, r * width + from + d), r * d);
      return y;
    };
    const [, qc] = pair(be, slice(qWide, batch * tq, 3 * d, d), [batch, tq, d]);  // q: the middle third
    const [, kc] = pair(be, slice(kvWide, batch * cap, 2 * d, 0), [batch, cap, d]);
    const [, vc] = pair(be, slice(kvWide, batch * cap, 2 * d, d), [batch, cap, d]);
    const mask = new Int32Array(batch * cap).fill(1);
    for (let j = 0; j < pad; j++) mask[(batch - 1) * cap + j] = 0;
    const maskG = be.upload(mask, [batch, cap], 'int32') as CudaTensor;
    // Rows of padding queries (all their keys masked) are garbage in the original too: real rows only.
    const real = (x: Float32Array) => x.filter((_, i) => {
      const row = Math.floor(i / d), b = Math.floor(row / tq), pos = kvLen - tq + (row % tq);
      return mask[b * cap + pos] === 1;
    });
    for (const alibi of [true, false]) {
      const slopes = alibi ? alibiSlopesFor(heads) : null;
      const want = down(cpu, cpu.attention({ q: qc, k: kc, v: vc, kvLen, nHeads: heads, scale, alibiSlopes: slopes,
        keyMask: pad ? cpu.upload(mask, [batch, cap], 'int32') : null }));
      const bytes = 2, qPtr = (qg as CudaTensor).ptr + d * bytes, kPtr = (kvg as CudaTensor).ptr, vPtr = kPtr + d * bytes;
      for (const shape of shapes) {
        // Output rows strided too (oStride 2d), the second half left NaN: only the first d columns are compared.
        const out = be.upload(new Float32Array(batch * tq * 2 * d).fill(NaN), [batch, tq, 2 * d], 'bfloat16') as CudaTensor;
        launchFlashForward(be.kernels, {
          q: qPtr, k: kPtr, v: vPtr, mask: pad ? maskG.ptr : 0, slopes: slopes ? be.slopesOnDevice(slopes).ptr : 0, out: out.ptr, lse: 0,
          batch, nHeads: heads, dHead, tq, capacity: cap, kvLen, qStride: 3 * d, kvStride: 2 * d, oStride: 2 * d, scale,
        }, shape);
        const got = slice(down(be, out), batch * tq, 2 * d, 0);
        close(`prefill out, ${flashShapeLabel(shape)}${alibi ? '' : ', no ALiBi'}`, real(got), real(want), 1e-2);
        be.release(out);
      }
    }
  });
}
