// LayerNorm backward kernels side by side at the training shape (bf16 [16384, 2048], the mpt-1b step's
// LN_1 and LN_2 calls with the residual gradient, QK-LN and LN_f without): milliseconds a call (the row
// kernel and layernorm_dw_sum) as the median over CUDA events around 20 calls queued back to back (so the
// host's time to issue a call is hidden, as in the step), after a warm-up; every variant twice, in
// alternation (A, B, …, A, B, …), the bandwidth that makes, the 97 calls of a step (48 with the residual,
// 49 without), each variant's results against the first one's (today's kernel) and whether a repeat
// gives the same bits; the ring kernel in four shapes (teams of at most 256 threads, its default, 128, 64
// and 32: more values a thread, fewer instructions a row for the reductions) and the line `best ring:`
// for $MPT_CUDA_LN_RING. Then the forward layernorm8. Run on a GPU: node dist/bench/tools/layernorm-ab.js [rows] [width]
import { CudaBackend } from '../../src/backend/cuda/index.js';
import { CudaEvent } from '../../src/backend/cuda/driver.js';
import { median, medianMs, randomOnDevice, relErr } from './device-tools.js';
import type { CudaTensor } from '../../src/backend/cuda/tensor.js';

const rows = Number(process.argv[2] ?? 16384), n = Number(process.argv[3] ?? 2048), eps = 1e-5;
const be = new CudaBackend({ dtype: 'bfloat16' });
const ops = be.training;
const count = rows * n;
let seed = 7;
const random = (shape: number[], mean: number, std: number, dtype: 'bfloat16' | 'float32' = 'bfloat16') => randomOnDevice(be, shape, seed++, mean, std, dtype);
const down = (t: CudaTensor) => be.download(t) as Float32Array;
const tbs = (bytes: number, ms: number) => `${(bytes / ms / 1e9).toFixed(2)} TB/s`;

/** Median ms a call of `fn` over `reps` batches of `batch` calls back to back (events around each batch), after 5 untimed calls. */
function batchedMs(fn: () => void, reps = 15, batch = 20): number {
  for (let i = 0; i < 5; i++) fn();
  const a = new CudaEvent(be.ctx), b = new CudaEvent(be.ctx), ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    a.record();
    for (let k = 0; k < batch; k++) fn();
    b.record();
    ms.push(b.since(a) / batch);
  }
  a.destroy(); b.destroy();
  return median(ms);
}

const x = random([rows, n], 0.3, 1.5), dy = random([rows, n], 0, 1), res = random([rows, n], 0, 1), w = random([n], 1, 0.1);
be.synchronize();

// ---- backward ----
type Variant = { name: string; set: () => void };
const savedTeams = { ...ops.lnTeams }, savedRing = { ...ops.lnRing }, savedKernel = ops.lnKernel;
const teams: Variant = { name: 'teams (registers, 512 a block; MPT_CUDA_LN_BWD=teams)', set: () => { ops.lnKernel = 'teams'; Object.assign(ops.lnTeams, savedTeams); } };
type RingShape = typeof ops.lnRing;
/** The ring with these fields of lnRing, named by the launch they give at this width (with the residual / without). */
const ring = (shape: Partial<RingShape>): Variant & { shape: RingShape } => {
  const full = { ...savedRing, ...shape };
  Object.assign(ops.lnRing, full);
  const perThread = Math.ceil(n / 8 / full.teamMax);
  const launch = (residual: boolean) => {
    const l = ops.ringShape(n, perThread, residual, 1);
    return `${l.teams}×${l.team} threads × ${l.minBlocks} an SM, ${l.defs.LN_STAGES} stages`;
  };
  const name = `ring ≤${full.teamMax} a team (${launch(true)} / ${launch(false)})`;
  Object.assign(ops.lnRing, savedRing);
  return { name, shape: full, set: () => { ops.lnKernel = 'ring'; Object.assign(ops.lnRing, full); } };
};
const rings = [ring({ teamMax: 256, blockThreads: 1024, threadsPerSM: 1024 }), ring({ teamMax: 128, blockThreads: 1024, threadsPerSM: 2048 }),
  ring({ teamMax: 64, blockThreads: 1024, threadsPerSM: 2048 }), ring({ teamMax: 32, blockThreads: 1024, threadsPerSM: 2048 })];
const variants: Variant[] = [teams, ...rings];
const bytes = { residual: 8 * count, plain: 6 * count }; // bf16 x, dy (+ residual) read, dx written
console.log(`LayerNorm backward, bf16 [${rows}, ${n}] on ${be.device.name}: ${bytes.residual / 1e6} MB with the residual, ${bytes.plain / 1e6} MB without`);
const dW = be.zeros([n], 'float32') as CudaTensor;
const call = (residual: CudaTensor | null) => be.scope(() => { ops.layerNormBackwardInto({ dy, x, weight: w, eps, dWeight: dW, dBias: null, residual }); });
/** One call's results into a zeroed accumulator. */
const once = (residual: CudaTensor | null) => {
  const acc = be.zeros([n], 'float32') as CudaTensor;
  const dx = ops.layerNormBackwardInto({ dy, x, weight: w, eps, dWeight: acc, dBias: null, residual }) as CudaTensor;
  const out = { dx: down(dx), dW: down(acc) };
  be.release(dx); be.release(acc);
  return out;
};
const same = (a: Float32Array, b: Float32Array) => a.every((value, i) => Object.is(value, b[i]));
const times = new Map<Variant, { res: number[]; plain: number[] }>(variants.map((v) => [v, { res: [], plain: [] }]));
let reference: { plain: ReturnType<typeof once>; res: ReturnType<typeof once> } | null = null;
for (const round of [1, 2]) {
  for (const v of variants) {
    v.set();
    const t = times.get(v)!;
    t.res.push(batchedMs(() => call(res)));
    t.plain.push(batchedMs(() => call(null)));
    if (round === 2) continue;
    const plain = once(null), again = once(null), withRes = once(res);
    reference ??= { plain, res: withRes };
    console.log(`${v.name.padEnd(80)} vs the first: dx ${relErr(plain.dx, reference.plain.dx).toExponential(2)}, dx + residual ${relErr(withRes.dx, reference.res.dx).toExponential(2)}, ` +
      `dW ${relErr(plain.dW, reference.plain.dW).toExponential(2)}; repeat ${same(plain.dx, again.dx) && same(plain.dW, again.dW) ? 'bit-identical' : 'DIFFERS'}`);
  }
}
ops.lnKernel = savedKernel; Object.assign(ops.lnTeams, savedTeams); Object.assign(ops.lnRing, savedRing);
console.log('ms a call (row kernel + layernorm_dw_sum), two rounds; a step\'s 97 calls from the rounds\' means:');
for (const v of variants) {
  const t = times.get(v)!, mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const step = 48 * mean(t.res) + 49 * mean(t.plain);
  console.log(`${v.name.padEnd(80)} residual ${t.res.map((m) => m.toFixed(4)).join(' / ')} (${tbs(bytes.residual, mean(t.res))}), ` +
    `plain ${t.plain.map((m) => m.toFixed(4)).join(' / ')} (${tbs(bytes.plain, mean(t.plain))}); 97 calls ${step.toFixed(2)} ms`);
}
be.release(dW);
// The fastest ring over a step's calls, in $MPT_CUDA_LN_RING's form (the step A/B runs it).
const stepMs = (v: Variant) => { const t = times.get(v)!; return 48 * (t.res[0] + t.res[1]) / 2 + 49 * (t.plain[0] + t.plain[1]) / 2; };
const best = rings.reduce((a, b) => (stepMs(b) < stepMs(a) ? b : a));
console.log(`best ring: ${Object.entries(best.shape).map(([k, v]) => `${k}=${v}`).join(',')}`);

// ---- forward: layernorm8 as the training forward launches it (a block a row) ----
const out = be.alloc([rows, n]);
const layernorm8 = be.kernels.get('layernorm.cu', 'layernorm8', be.defs({ MPT_X_F32: false }));
const ms = medianMs(be, () => layernorm8.launch([rows], [be.rowThreads8(n)], [x.ptr, 0, w.ptr, 0, out.ptr, n, eps]), 25);
console.log(`LayerNorm forward layernorm8, bf16 [${rows}, ${n}]: ${ms.toFixed(4)} ms (${tbs(4 * count, ms)})`);
