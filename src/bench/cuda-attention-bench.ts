/**
 * The causal ALiBi flash attention kernels alone, on the 1.3B preset's shapes (16 heads of 128, 2048
 * positions): the forward at batch 1 as prefill runs it (no lse) and at batch 8 as training runs it
 * (with lse), and the backward (dq, then dk and dv) at batch 8. CUDA events around each launch, after
 * a warm-up; medians. Inputs are random normal (never zeros).
 *
 * TFLOP/s count the causal half of the products: forward 4·b·h·t²·d / 2 (17.2 GFLOP a layer at batch
 * 1), backward 2.5 × the forward (five products against two), the convention of FlashAttention's
 * papers, whatever extra products a kernel recomputes.
 *
 *   node dist/src/bench/cuda-attention-bench.js [--variants] [--before DIR] [--torch bench/attention_torch.py]
 *        [--reps N] [--json FILE]
 *
 * --variants  also times every compile-time shape of flash.ts (forward shapes, backward chunks and modes);
 *             with --forward-only, the wgmma forward shapes alone, twice (the second round in reverse order),
 *             and their check against mma.sync; the backward is left out.
 * On sm_90a the dk/dv kernels (mma.sync, the before, and wgmma) are always timed side by side, and so
 *             are the dq passes from the stored dsᵀ (mma.sync, wgmma and flash_backward_dq_fa3's shapes,
 *             two rounds), with the count of dq elements where they differ from mma.sync's.
 * --dq-only   only that dq comparison (after the forward that feeds it); --backward-only: the dk/dv
 *             comparison (mma.sync, wgmma, wgmma on a head-major grid, the fa3 default and the fa3
 *             candidates: 4 stages, ping-pong, TMA loads) and that dq comparison; --dkdv-only: the dk/dv
 *             comparison alone.
 * --before    times the kernels of an earlier commit from DIR (common.cuh, flash_attention.cu and
 *             flash_backward.cu of commit b6e5d97: `git show b6e5d97:src/backend/cuda/kernels/FILE`),
 *             launched as that commit did (64-query dq blocks, dsᵀ stored row-major),
 *             for before/after in one run.
 * --torch     runs the PyTorch script on the same shapes (SDPA with the ALiBi bias, SDPA flash without
 *             ALiBi, FlexAttention with an ALiBi score_mod) and prints its figures beside ours.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { CudaBackend, type CudaTensor } from '../backend/cuda/index.js';
import { CudaEvent } from '../backend/cuda/driver.js';
import { KernelCache } from '../backend/cuda/kernels.js';
import {
  FLASH_BACKWARD_CHUNK_DEFAULT, FLASH_BACKWARD_STORED_DS, FLASH_FORWARD_SHAPES, FLASH_TRAIN_MMA_SHAPE, FLASH_TRAIN_SHAPE, flashBackwardScratchElements, flashDkdvDefault,
  flashPrefillShape, flashShapeLabel, wgmmaUsable, launchFlashBackward, launchFlashForward, type FlashDkdvKernel, type FlashForwardShape,
  flashDqDefault, launchRowDot, type FlashDqKernel,
} from '../backend/cuda/flash.js';
import { alibiSlopes, MPT_1B_REDPAJAMA_200B } from '../model/config.js';
import { UserError } from '../util/errors.js';
import { median } from '../util/median.js';

interface Row { name: string; ms: number; tflops: number }


/** How far x parts from the reference y: elements that differ at all, max |x − y|, max |y|, relative RMS error. */
function differences(x: ArrayLike<number>, y: ArrayLike<number>): { differ: number; maxAbs: number; maxRef: number; rel: number } {
  let maxAbs = 0, maxRef = 0, num = 0, den = 0, differ = 0;
  for (let i = 0; i < x.length; i++) {
    const e = Math.abs(x[i] - y[i]);
    if (!(e === 0)) differ++;
    maxAbs = Math.max(maxAbs, e); maxRef = Math.max(maxRef, Math.abs(y[i]));
    num += e * e; den += y[i] ** 2;
  }
  return { differ, maxAbs, maxRef, rel: Math.sqrt(num / den) };
}

function main(argv: string[]): void {
  const flag = (name: string) => argv.includes(name);
  const value = (name: string) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : undefined; };
  if (flag('--help')) {
    process.stdout.write('usage: node dist/src/bench/cuda-attention-bench.js [--variants [--forward-only]] [--dq-only | --dkdv-only | --backward-only] [--before DIR] [--torch SCRIPT] [--reps N] [--json FILE]\n');
    return;
  }
  const reps = Number(value('--reps') ?? 20);
  if (!Number.isInteger(reps) || reps < 3) throw new UserError(`--reps must be an integer ≥ 3, got ${value('--reps')}`);
  const c = MPT_1B_REDPAJAMA_200B, heads = c.nHeads, dHead = c.dModel / c.nHeads, t = c.maxSeqLen, d = c.dModel;
  const scale = 1 / Math.sqrt(dHead);
  const be = new CudaBackend({ dtype: 'bfloat16' });
  const log = (line: string) => process.stdout.write(line + '\n');
  log(`device: ${be.device.name}; ${heads} heads of ${dHead}, t = ${t}, causal, ALiBi in the kernel; median of ${reps} after warm-up`);

  const fwdFlops = (batch: number) => 4 * batch * heads * t * t * dHead / 2;
  const rows: Row[] = [];
  const timeIt = (name: string, flops: number, fn: () => void): Row => {
    for (let i = 0; i < 3; i++) fn();
    const a = new CudaEvent(be.ctx), b = new CudaEvent(be.ctx), ms: number[] = [];
    for (let i = 0; i < reps; i++) {
      a.record(); fn(); b.record();
      ms.push(b.since(a));
    }
    a.destroy(); b.destroy();
    const row = { name, ms: median(ms), tflops: flops / (median(ms) * 1e9) };
    rows.push(row);
    log(`${name.padEnd(58)} ${row.ms.toFixed(3).padStart(8)} ms ${row.tflops.toFixed(1).padStart(7)} TFLOP/s`);
    return row;
  };

  const slopes = be.slopesOnDevice(alibiSlopes(c)).ptr;
  let seed = 7;
  const normal = (batch: number) => be.randomNormal([batch, t, d], seed++, 0, 1);
  const x8 = { q: normal(8), k: normal(8), v: normal(8), dOut: normal(8) };
  const x1 = { q: normal(1), k: normal(1), v: normal(1) };
  const out8 = be.alloc([8, t, d]), out1 = be.alloc([1, t, d]);
  const lse8 = be.alloc([8, heads, t], 'float32'), D8 = be.alloc([8, heads, t], 'float32');
  const dq = be.alloc([8, t, d]), dk = be.alloc([8, t, d]), dv = be.alloc([8, t, d]);
  const fwd = (batch: 1 | 8, shape: FlashForwardShape) => {
    const x = batch === 1 ? x1 : x8;
    launchFlashForward(be.kernels, {
      q: x.q.ptr, k: x.k.ptr, v: x.v.ptr, mask: 0, slopes, out: (batch === 1 ? out1 : out8).ptr, lse: batch === 1 ? 0 : lse8.ptr,
      batch, nHeads: heads, dHead, tq: t, capacity: t, kvLen: t, qStride: d, kvStride: d, oStride: d, scale,
    }, shape);
  };
  const rowDot = (kernel: 'vector' | 'scalar' = 'vector') =>
    launchRowDot(be.kernels, true, { dOut: x8.dOut.ptr, out: out8.ptr, D: D8.ptr, batch: 8, t, nHeads: heads, dHead }, kernel);
  const dsScratch = be.alloc([flashBackwardScratchElements(8, heads, t)], 'bfloat16');
  const dkdvDefault = flashDkdvDefault(be.kernels, dHead);
  const dqDefault = flashDqDefault(be.kernels, dHead);
  const bwd = (chunk: number, parts: 'both' | 'dq' | 'dkdv' = 'both', stored = FLASH_BACKWARD_STORED_DS, kernel = dkdvDefault,
    into = { dq, dk, dv }, dqKernel: FlashDqKernel = dqDefault) => launchFlashBackward(be.kernels, {
    q: x8.q.ptr, k: x8.k.ptr, v: x8.v.ptr, dOut: x8.dOut.ptr, lse: lse8.ptr, D: D8.ptr, slopes,
    dq: into.dq.ptr, dk: into.dk.ptr, dv: into.dv.ptr, batch: 8, t, nHeads: heads, dHead, scale, ds: stored ? dsScratch.ptr : 0,
  }, chunk, parts, kernel, dqKernel);
  const mode = (stored: boolean) => (stored ? 'dq from stored ds' : 'dq recomputed');
  // The row term's two kernels, twice in alternation (they read dO and o, 2 × 8·t·d bf16, and write D).
  const timeRowDots = () => {
    for (const round of [1, 2]) for (const kernel of ['vector', 'scalar'] as const) {
      const r = timeIt(`backward row term D = dO·O, batch 8, ${kernel} kernel (round ${round})`, 0, () => rowDot(kernel));
      log(`  ${(2 * 8 * t * d * 2 / (r.ms * 1e-3) / 1e12).toFixed(2)} TB/s of dO and o read`);
    }
    rowDot();  // the default's D for what follows
  };
  const label = flashShapeLabel;

  const FLASH_PREFILL_SHAPE = flashPrefillShape(dHead);
  // Warm-up of the whole GPU (clocks ramp for a while) before the first figure.
  for (let i = 0; i < 60; i++) fwd(8, FLASH_TRAIN_SHAPE);
  be.synchronize();
  if (flag('--dq-only') || flag('--backward-only') || flag('--dkdv-only')) {
    rowDot();
    if (!wgmmaUsable(be.kernels, dHead)) throw new UserError('--dq-only, --dkdv-only and --backward-only compare the wgmma kernels: they need sm_90a');
    if (flag('--dkdv-only')) {  // the dk/dv kernels alone (and with the default dq after them)
      compareDkdvKernels();
      return;
    }
    timeRowDots();
    if (flag('--backward-only')) compareDkdvKernels();
    compareDqKernels();
    return;
  }
  log('-- current kernels (defaults of flash.ts)');
  const pre = timeIt(`forward, batch 1 (prefill), ${label(FLASH_PREFILL_SHAPE)}`, fwdFlops(1), () => fwd(1, FLASH_PREFILL_SHAPE));
  const tr = timeIt(`forward + lse, batch 8 (training), ${label(FLASH_TRAIN_SHAPE)}`, fwdFlops(8), () => fwd(8, FLASH_TRAIN_SHAPE));
  const bw = flag('--forward-only') ? undefined : backwardNow();
  // The mma.sync kernel that was the default before the wgmma one (and stays its fallback), same inputs.
  const mmaPrefill = 'wgmma' in FLASH_PREFILL_SHAPE ? FLASH_PREFILL_SHAPE.fallback : FLASH_PREFILL_SHAPE;
  const pre0 = timeIt(`before: forward, batch 1 (prefill), ${label(mmaPrefill)}`, fwdFlops(1), () => fwd(1, mmaPrefill));
  const tr0 = timeIt(`before: forward + lse, batch 8 (training), ${label(FLASH_TRAIN_MMA_SHAPE)}`, fwdFlops(8), () => fwd(8, FLASH_TRAIN_MMA_SHAPE));
  log(`speed-up over mma.sync: prefill forward ${(pre0.ms / pre.ms).toFixed(2)}×, training forward ${(tr0.ms / tr.ms).toFixed(2)}×`);

  // The backward's current kernels (left out with --forward-only, which times the forward shapes alone).
  function backwardNow(): Row {
    fwd(8, FLASH_TRAIN_SHAPE);
    rowDot();
    timeRowDots();
    const bw = timeIt(`backward dq + dk/dv (${dkdvDefault}), batch 8, ${FLASH_BACKWARD_CHUNK_DEFAULT}-key chunks, ${mode(FLASH_BACKWARD_STORED_DS)}`, 2.5 * fwdFlops(8), () => bwd(FLASH_BACKWARD_CHUNK_DEFAULT));
    // Products as actually computed: dk/dv 4 (S, dP, dV, dK); dq 3 (S, dP, dQ) recomputed or 1 from stored ds.
    timeIt('  of which dk/dv (4 products, as computed)', 2 * fwdFlops(8), () => bwd(FLASH_BACKWARD_CHUNK_DEFAULT, 'dkdv'));
    timeIt(`  of which dq (${FLASH_BACKWARD_STORED_DS ? 1 : 3} products, as computed)`, (FLASH_BACKWARD_STORED_DS ? 0.5 : 1.5) * fwdFlops(8), () => bwd(FLASH_BACKWARD_CHUNK_DEFAULT, 'dq'));
    fwd(8, FLASH_TRAIN_SHAPE);  // the backward reads the default's lse
    log(`backward / forward (batch 8): ${(bw.ms / tr.ms).toFixed(2)}×; per layer ×24: prefill ${(24 * pre.ms).toFixed(2)} ms, training fwd ${(24 * tr.ms).toFixed(2)} ms, bwd ${(24 * bw.ms).toFixed(2)} ms`);
    if (wgmmaUsable(be.kernels, dHead)) { compareDkdvKernels(); compareDqKernels(); }
    return bw;
  }

  // The dq passes from the stored dsᵀ side by side, same inputs, same process: mma.sync (the fallback),
  // wgmma (the default before flash_backward_dq_fa3) and the fa3 shapes, two rounds (the second in reverse
  // order, so that no pass always runs first or last); the best of each against wgmma; the whole backward
  // with wgmma and the fa3 default ("after dk/dv" = whole backward − dk/dv alone: dq reading a scratch
  // just written, part of it still in L2). Then every pass's dq against mma.sync's: all sum the same
  // products in the same order, so they must agree to the bit.
  function compareDqKernels(): void {
    log('-- dq from stored ds: mma.sync, wgmma (before) and flash_backward_dq_fa3 shapes; dk/dv on wgmma');
    bwd(64, 'both', true, 'wgmma', { dq, dk, dv }, 'mma');  // fills the scratch
    const dqBytes = flashBackwardScratchElements(8, heads, t) * 2;
    // fa3-cC-tT-sS: C consumers of T 64-query tiles, S stages; -gG heads in groups of G; -p persistent; -r heads
    // from the last (fa3DqShape). 128 queries a block (fa3-c2-t1-s6, persistent or not: 0.285-0.304 ms against
    // 0.270-0.274 for wgmma) and 3 consumers persistent (0.290) lost in the seventh session (RESULTS-attention.md).
    const candidates: FlashDqKernel[] = ['fa3-c2-t2-s4', 'fa3-c2-t2-s4-g16', 'fa3-c2-t2-s4-p', 'fa3-c3-t1-s5', 'fa3-c2-t2-s4-r'];
    const passes: FlashDqKernel[] = ['mma', 'wgmma', ...candidates];
    const times = new Map<FlashDqKernel, number[]>();
    for (const s of [...passes, ...[...passes].reverse()]) {
      const r = timeIt(`  dq alone, ${s}`, 0.5 * fwdFlops(8), () => bwd(64, 'dq', true, 'wgmma', { dq, dk, dv }, s));
      log(`      dsᵀ read at ${(dqBytes / (r.ms * 1e9)).toFixed(2)} TB/s`);
      times.set(s, [...(times.get(s) ?? []), r.ms]);
    }
    // The card's streaming rate for reference: a device-to-device copy of the scratch (read + write).
    const copy = be.alloc([flashBackwardScratchElements(8, heads, t)], 'bfloat16');
    const c = timeIt('  reference: copy of the dsᵀ scratch (device to device)', 0, () => be.ctx.copyDevice(copy.ptr, dsScratch.ptr, dqBytes));
    log(`      ${(2 * dqBytes / (c.ms * 1e9)).toFixed(2)} TB/s read + written`);
    be.release(copy);
    const ms = (s: FlashDqKernel) => times.get(s)!.map((x) => x.toFixed(3)).join(' / ');
    const best = (s: FlashDqKernel) => Math.min(...times.get(s)!);
    for (const s of passes.filter((x) => x !== 'wgmma')) {
      log(`speed-up of dq ${s} over wgmma (best of two rounds): ${(best('wgmma') / best(s)).toFixed(3)}× (${ms(s)} against ${ms('wgmma')} ms)`);
    }
    // dq right after the default dk/dv (as in the training step: part of the dsᵀ it wrote last is still in L2),
    // events around the dq launch alone, two rounds; the scratch holds the same dsᵀ throughout.
    const afterPasses: FlashDqKernel[] = ['wgmma', 'fa3-c2-t2-s4', 'fa3-c2-t2-s4-r', 'fa3-c2-t2-s4-p-r'];
    const after = new Map<FlashDqKernel, number[]>();
    for (const s of [...afterPasses, ...[...afterPasses].reverse()]) {
      const once = () => { bwd(64, 'dkdv', true, dkdvDefault); bwd(64, 'dq', true, dkdvDefault, { dq, dk, dv }, s); };
      for (let i = 0; i < 3; i++) once();
      const a = new CudaEvent(be.ctx), b = new CudaEvent(be.ctx), xs: number[] = [];
      for (let i = 0; i < reps; i++) {
        bwd(64, 'dkdv', true, dkdvDefault);
        a.record(); bwd(64, 'dq', true, dkdvDefault, { dq, dk, dv }, s); b.record();
        xs.push(b.since(a));
      }
      a.destroy(); b.destroy();
      after.set(s, [...(after.get(s) ?? []), median(xs)]);
      log(`  dq right after dk/dv (${dkdvDefault}), ${s}`.padEnd(58) + ` ${median(xs).toFixed(3).padStart(8)} ms`);
    }
    for (const s of afterPasses.slice(1)) {
      const w = after.get('wgmma')!, x = after.get(s)!;
      log(`speed-up of dq ${s} over wgmma right after dk/dv (best of two rounds): ${(Math.min(...w) / Math.min(...x)).toFixed(3)}× `
        + `(${x.map((v) => v.toFixed(3)).join(' / ')} against ${w.map((v) => v.toFixed(3)).join(' / ')} ms)`);
    }
    bwd(64, 'both', true, 'wgmma', { dq, dk, dv }, 'mma');  // the wgmma dk/dv's dsᵀ again, for the checks below
    const dkdvAlone = timeIt('  dk/dv storing ds, wgmma', 2 * fwdFlops(8), () => bwd(64, 'dkdv', true, 'wgmma'));
    for (const s of ['wgmma', 'fa3'] as const) {
      const whole = timeIt(`  backward dq + dk/dv, dq ${s}`, 2.5 * fwdFlops(8), () => bwd(64, 'both', true, 'wgmma', { dq, dk, dv }, s));
      log(`      dq after dk/dv: ${(whole.ms - dkdvAlone.ms).toFixed(3)} ms`);
    }
    const reference = be.alloc([8, t, d]);
    bwd(64, 'both', true, 'wgmma', { dq: reference, dk, dv }, 'mma');
    const y = be.download(reference);
    for (const s of passes.filter((x) => x !== 'mma')) {
      be.ctx.fill32(dq.ptr, 0x7fc07fc0, 8 * t * d / 2);  // bf16 NaNs: a row the pass fails to write differs
      bwd(64, 'dq', true, 'wgmma', { dq, dk, dv }, s);
      const x = be.download(dq), { differ, maxAbs } = differences(x, y);
      log(`  check dq ${s} against mma.sync: ${differ} of ${x.length} differ, max |Δ| ${maxAbs.toExponential(2)}`);
    }
    be.release(reference);
  }

  // The dk/dv kernels side by side, same inputs, same process: mma.sync (main's kernel, the fallback) as
  // the before, wgmma as the after; then how far their outputs part (bf16 rounding of different sums).
  function compareDkdvKernels(): void {
    log('-- dk/dv kernels: mma.sync (before) against wgmma, storing ds, dq from it');
    const pairs: Array<[FlashDkdvKernel, Row, Row]> = [];
    // the wgmma kernel's grids, then flash_backward_dkdv_fa3's shapes (stages, head groups, ping-pong turns):
    // fa3-s3-g16-pp1-tma is the default, 'fa3' (session tmaf); beside it the same on cp.async (the default
    // before), 4 stages with TMA (a tie with 3 on the H200) and on cp.async (the seventh session's runner-up).
    // The other shapes of bwd3's table, bwd3b's overlapped ones, two ping-pong turns a tile and no ping-pong
    // (fa3-s3-g16: 0.714-0.719 ms against 0.659-0.663 for the default on the H200) lost
    // (bench/RESULTS-attention.md) and are left out.
    const fa3Default: FlashDkdvKernel = 'fa3-s3-g16-pp1-tma';
    const candidates: FlashDkdvKernel[] = ['fa3-s3-g16-pp1', 'fa3-s4-g16-pp1-tma', 'fa3-s4-g16'];
    const grids: FlashDkdvKernel[] = ['wgmma', 'wgmma-head-major', fa3Default, ...candidates];
    const kernels: FlashDkdvKernel[] = ['mma', ...grids];
    // The second round in reverse order, so that no kernel always runs first or last.
    for (const kernel of [...kernels, ...[...kernels].reverse()]) {
      const a = timeIt(`  dk/dv storing ds, ${kernel}`, 2 * fwdFlops(8), () => bwd(64, 'dkdv', true, kernel));
      const b = timeIt(`  backward dq + dk/dv, ${kernel}`, 2.5 * fwdFlops(8), () => bwd(64, 'both', true, kernel));
      pairs.push([kernel, a, b]);
    }
    timeIt('  dk/dv alone, no ds stored, wgmma', 2 * fwdFlops(8), () => bwd(64, 'dkdv', false, 'wgmma'));
    const best = (kernel: FlashDkdvKernel, i: 1 | 2) => Math.min(...pairs.filter((p) => p[0] === kernel).map((p) => p[i].ms));
    log(`speed-up of wgmma (best of two rounds): dk/dv ${(best('mma', 1) / best('wgmma', 1)).toFixed(2)}×, whole backward ${(best('mma', 2) / best('wgmma', 2)).toFixed(2)}×`);
    for (const grid of grids.slice(1)) {
      log(`speed-up of ${grid} over wgmma: dk/dv ${(best('wgmma', 1) / best(grid, 1)).toFixed(3)}×, whole backward ${(best('wgmma', 2) / best(grid, 2)).toFixed(3)}×`);
    }
    for (const grid of grids.filter((x) => x.startsWith('fa3'))) {
      const hm = 'wgmma-head-major';
      log(`speed-up of ${grid} over ${hm}: dk/dv ${(best(hm, 1) / best(grid, 1)).toFixed(3)}×, whole backward ${(best(hm, 2) / best(grid, 2)).toFixed(3)}×`);
    }
    // The candidates against the fa3 default, best of two rounds and round by round (same process, same inputs).
    const ms = (kernel: FlashDkdvKernel, i: 1 | 2) => pairs.filter((p) => p[0] === kernel).map((p) => p[i].ms.toFixed(3)).join(' / ');
    for (const grid of candidates) {
      log(`speed-up of ${grid} over the fa3 default ${fa3Default}: dk/dv ${(best(fa3Default, 1) / best(grid, 1)).toFixed(3)}× (${ms(grid, 1)} against ${ms(fa3Default, 1)} ms), `
        + `whole backward ${(best(fa3Default, 2) / best(grid, 2)).toFixed(3)}× (${ms(grid, 2)} against ${ms(fa3Default, 2)} ms)`);
    }
    // The same inputs through both: the outputs must agree with mma.sync's to bf16 rounding (the tests
    // check the math); both kernels sum in the same order, so they may agree to the bit.
    const reference = { dq: be.alloc([8, t, d]), dk: be.alloc([8, t, d]), dv: be.alloc([8, t, d]) };
    bwd(64, 'both', true, 'mma', reference);
    for (const kernel of grids) {
      bwd(64, 'both', true, kernel);
      const parts = (['dq', 'dk', 'dv'] as const).map((name) => {
        const r = differences(be.download(name === 'dq' ? dq : name === 'dk' ? dk : dv), be.download(reference[name]));
        return `${name} ${r.differ} differ, max |Δ| ${r.maxAbs.toExponential(2)} (max ${r.maxRef.toFixed(2)}), rel ${r.rel.toExponential(2)}`;
      });
      log(`check ${kernel} against mma.sync: ${parts.join('; ')}`);
    }
    for (const x of Object.values(reference)) be.release(x);
  }

  if (flag('--variants')) {
    log('-- forward shapes');
    let best: { index: number; ms: number } | undefined, bestPrefill: { index: number; ms: number } | undefined;
    // With --forward-only the wgmma shapes twice, the second round in reverse order (the spread of a call).
    const timed = FLASH_FORWARD_SHAPES.filter((x) => !flag('--forward-only') || 'wgmma' in x);
    for (const s of flag('--forward-only') ? [...timed, ...[...timed].reverse()] : timed) {
      const p = timeIt(`  forward, batch 1, ${label(s)}`, fwdFlops(1), () => fwd(1, s));
      const r = timeIt(`  forward + lse, batch 8, ${label(s)}`, fwdFlops(8), () => fwd(8, s));
      if (!best || r.ms < best.ms) best = { index: FLASH_FORWARD_SHAPES.indexOf(s), ms: r.ms };
      if (!bestPrefill || p.ms < bestPrefill.ms) bestPrefill = { index: FLASH_FORWARD_SHAPES.indexOf(s), ms: p.ms };
    }
    // For an A/B of the training step: MPT_FLASH_TRAIN_SHAPE=<index> (flash.ts) makes it the training default.
    if (best) log(`fastest training forward: MPT_FLASH_TRAIN_SHAPE=${best.index} (${label(FLASH_FORWARD_SHAPES[best.index])}, ${best.ms.toFixed(3)} ms)`);
    if (bestPrefill) log(`fastest prefill forward: ${label(FLASH_FORWARD_SHAPES[bestPrefill.index])}, ${bestPrefill.ms.toFixed(3)} ms`);
    // Every wgmma shape against the mma.sync kernel on the same inputs (the tests check the math): the
    // outputs must agree to bf16 rounding, the lse to float32 rounding of bf16 products.
    fwd(1, mmaPrefill); fwd(8, FLASH_TRAIN_MMA_SHAPE);
    const ref1 = be.download(out1), ref8 = be.download(out8), refLse = be.download(lse8);
    const maxDiff = (x: ArrayLike<number>, y: ArrayLike<number>) => differences(x, y).maxAbs.toExponential(2);
    for (const s of FLASH_FORWARD_SHAPES.filter((x) => 'wgmma' in x)) {
      fwd(1, s); fwd(8, s);
      log(`  check ${label(s)}: max |wgmma − mma| prefill out ${maxDiff(be.download(out1), ref1)}, training out ${maxDiff(be.download(out8), ref8)}, lse ${maxDiff(be.download(lse8), refLse)}`);
    }
    fwd(8, FLASH_TRAIN_SHAPE);
  }
  if (flag('--variants') && !flag('--forward-only')) {
    log('-- backward chunks');
    for (const stored of [false, true]) {
      for (const chunk of [16, 32, 64]) timeIt(`  backward, batch 8, ${chunk}-key chunks, mma.sync dk/dv, ${mode(stored)}`, 2.5 * fwdFlops(8), () => bwd(chunk, 'both', stored, 'mma'));
    }
    timeIt('  dq alone from stored ds (1 product)', 0.5 * fwdFlops(8), () => bwd(64, 'dq', true));
    timeIt('  dk/dv storing ds, mma.sync', 2 * fwdFlops(8), () => bwd(64, 'dkdv', true, 'mma'));
    timeIt('  dk/dv alone, no ds stored, mma.sync', 2 * fwdFlops(8), () => bwd(64, 'dkdv', false, 'mma'));
    timeIt('  dq alone, recomputed (3 products)', 1.5 * fwdFlops(8), () => bwd(64, 'dq', false));
  }

  const before = value('--before');
  if (before) {
    log(`-- kernels of the earlier commit, from ${before}`);
    // KernelCache reads $MPT_KERNELS when it compiles (at the first launch of each kernel), not when it is
    // made: it stays pointed at DIR until every old kernel has been timed.
    const saved = process.env.MPT_KERNELS;
    process.env.MPT_KERNELS = before;
    const old = new KernelCache(be.ctx);
    const row = (dHead + 8) * 2, bwdDefs = { MPT_BF16: true, HEAD_DIM: dHead, BWD_CHUNK: 64, DQS_MIN_BLOCKS: 4 };
    const oldDkdv = old.get('flash_backward.cu', 'flash_backward_dkdv', bwdDefs);
    const oldDq = old.get('flash_backward.cu', 'flash_backward_dq_stored', bwdDefs);
    const oldOut1 = be.alloc([1, t, d]), oldOut8 = be.alloc([8, t, d]), oldLse = be.alloc([8, heads, t], 'float32');
    const oldDqOut = be.alloc([8, t, d]), oldDk = be.alloc([8, t, d]), oldDv = be.alloc([8, t, d]);
    // The forward's launch is unchanged since that commit: flash.ts launches the old source.
    const oldFwd = (batch: 1 | 8, shape: FlashForwardShape) => {
      const x = batch === 1 ? x1 : x8;
      launchFlashForward(old, {
        q: x.q.ptr, k: x.k.ptr, v: x.v.ptr, mask: 0, slopes, out: (batch === 1 ? oldOut1 : oldOut8).ptr, lse: batch === 1 ? 0 : oldLse.ptr,
        batch, nHeads: heads, dHead, tq: t, capacity: t, kvLen: t, qStride: d, kvStride: d, oStride: d, scale,
      }, shape);
    };
    const grid = [8 * heads, Math.ceil(t / 64)];
    // The earlier commit has only the mma.sync kernel: its shapes (the wgmma defaults' fallbacks).
    const p0 = timeIt('before: forward, batch 1 (prefill)', fwdFlops(1), () => oldFwd(1, mmaPrefill));
    const t0 = timeIt('before: forward + lse, batch 8 (training)', fwdFlops(8), () => oldFwd(8, FLASH_TRAIN_MMA_SHAPE));
    const b0 = timeIt('before: backward dk/dv storing ds + dq from it, batch 8', 2.5 * fwdFlops(8), () => {
      oldDkdv.launch(grid, [128], [x8.q.ptr, x8.k.ptr, x8.v.ptr, x8.dOut.ptr, lse8.ptr, D8.ptr, slopes, oldDk.ptr, oldDv.ptr, dsScratch.ptr, t, heads, scale],
        6 * 64 * row + 4 * 64 * 4);
      oldDq.launch(grid, [128], [x8.k.ptr, dsScratch.ptr, oldDqOut.ptr, t, heads, scale], 2 * 64 * row + 2 * 64 * (64 + 8) * 2);
    });
    if (saved === undefined) delete process.env.MPT_KERNELS; else process.env.MPT_KERNELS = saved;
    log(`speed-up: prefill forward ${(p0.ms / pre.ms).toFixed(2)}×, training forward ${(t0.ms / tr.ms).toFixed(2)}×, backward ${bw ? (b0.ms / bw.ms).toFixed(2) : '(not timed)'}×`);
    // The same inputs through both: the outputs must agree to bf16 rounding (the tests check the math).
    fwd(1, FLASH_PREFILL_SHAPE); fwd(8, FLASH_TRAIN_SHAPE); bwd(FLASH_BACKWARD_CHUNK_DEFAULT);
    const diff = (a: CudaTensor, b: CudaTensor) => {
      const r = differences(be.download(a), be.download(b));
      return `max |new − old| ${r.maxAbs.toExponential(2)} (max |old| ${r.maxRef.toFixed(2)})`;
    };
    log(`check: prefill out ${diff(out1, oldOut1)}; training out ${diff(out8, oldOut8)}; lse ${diff(lse8, oldLse)}`);
    log(`check: dq ${diff(dq, oldDqOut)}; dk ${diff(dk, oldDk)}; dv ${diff(dv, oldDv)}`);
  }

  let torch: unknown = null;
  const script = value('--torch');
  if (script) {
    try {
      const text = execFileSync('python3', [script, '--reps', String(reps)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
      process.stdout.write(text.split('\n').filter((l) => !l.startsWith('{')).join('\n') + '\n');
      const line = text.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      torch = line ? JSON.parse(line) : null;
    } catch (error) {
      log(`torch: failed: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  const json = value('--json');
  if (json) writeFileSync(json, JSON.stringify({ device: be.device.name, reps, rows, torch }, null, 1));
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  try {
    main(process.argv.slice(2));
  } catch (error) {
    if (error instanceof UserError) { process.stderr.write(`error: ${error.message}\n`); process.exit(2); }
    throw error;
  }
}
