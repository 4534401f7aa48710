// LayerNorm backward shapes side by side at the training shape (bf16 [16384, 2048], the mpt-1b step's
// LN_1, LN_2, QK-LN and LN_f calls), and the forward layernorm8: median milliseconds a call over CUDA
// events after a warm-up, the bandwidth that makes, each shape's results against the first one's (the
// default) and whether a repeat gives the same bits. Run on a GPU: node dist/bench/tools/layernorm-ab.js [rows] [width]
import { CudaBackend } from '../../src/backend/cuda/index.js';
import { medianMs, randomOnDevice, relErr } from './device-tools.js';
import type { CudaTensor } from '../../src/backend/cuda/tensor.js';

const rows = Number(process.argv[2] ?? 16384), n = Number(process.argv[3] ?? 2048), eps = 1e-5;
const be = new CudaBackend({ dtype: 'bfloat16' });
const ops = be.training;
const count = rows * n;
let seed = 7;
const random = (shape: number[], mean: number, std: number, dtype: 'bfloat16' | 'float32' = 'bfloat16') => randomOnDevice(be, shape, seed++, mean, std, dtype);
/** Median ms of `fn` over `reps` calls (events around each), after 3 untimed ones. */
const time = (fn: () => void, reps = 25): number => medianMs(be, fn, reps);
const down = (t: CudaTensor) => be.download(t) as Float32Array;
const gbs = (bytes: number, ms: number) => `${(bytes / ms / 1e6).toFixed(0)} GB/s`;

const x = random([rows, n], 0.3, 1.5), dy = random([rows, n], 0, 1), res = random([rows, n], 0, 1), w = random([n], 1, 0.1);
be.synchronize();

// ---- backward ----
type Variant = { name: string; set: () => void };
const teams = (teamMax: number, blockThreads: number, threadsPerSM: number): Variant => ({
  name: `≤${teamMax} threads a row, ${blockThreads} a block, ${threadsPerSM} an SM`,
  set: () => { ops.lnTeams = { teamMax, blockThreads, threadsPerSM }; },
});
const defaults = { ...ops.lnTeams };
const variants: Variant[] = [teams(defaults.teamMax, defaults.blockThreads, defaults.threadsPerSM), teams(256, 1024, 1024), teams(256, 256, 1024), teams(256, 512, 512), teams(128, 512, 512)];
const bytes = { residual: 8 * count, plain: 6 * count }; // bf16 x, dy (+ residual) read, dx written
let reference: { dx: Float32Array; dW: Float32Array; dxRes: Float32Array } | null = null;
console.log(`LayerNorm backward, bf16 [${rows}, ${n}] (floor at 3.0 TB/s: ${(bytes.residual / 3e9).toFixed(4)} ms with residual, ${(bytes.plain / 3e9).toFixed(4)} without)`);
for (const v of variants) {
  v.set();
  const dW = be.zeros([n], 'float32') as CudaTensor;
  const call = (residual: CudaTensor | null) => be.scope(() => { ops.layerNormBackwardInto({ dy, x, weight: w, eps, dWeight: dW, dBias: null, residual }); });
  const msRes = time(() => call(res)), msPlain = time(() => call(null));
  // Results of one call into a zeroed accumulator, twice (deterministic?), against the first variant's.
  const once = () => {
    const acc = be.zeros([n], 'float32') as CudaTensor;
    const dx = ops.layerNormBackwardInto({ dy, x, weight: w, eps, dWeight: acc, dBias: null, residual: null }) as CudaTensor;
    const out = { dx: down(dx), dW: down(acc) };
    be.release(dx); be.release(acc);
    return out;
  };
  const r1 = once(), r2 = once();
  const dxRes = ops.layerNormBackwardInto({ dy, x, weight: w, eps, dWeight: dW, dBias: null, residual: res }) as CudaTensor;
  const withRes = down(dxRes);
  be.release(dxRes); be.release(dW);
  const same = r1.dW.every((value, i) => Object.is(value, r2.dW[i])) && r1.dx.every((value, i) => Object.is(value, r2.dx[i]));
  reference ??= { dx: r1.dx, dW: r1.dW, dxRes: withRes };
  console.log(`${v.name.padEnd(56)} residual ${msRes.toFixed(4)} ms (${gbs(bytes.residual, msRes)}), plain ${msPlain.toFixed(4)} ms (${gbs(bytes.plain, msPlain)}); ` +
    `vs first: dx ${relErr(r1.dx, reference.dx).toExponential(2)}, dx+res ${relErr(withRes, reference.dxRes).toExponential(2)}, dW ${relErr(r1.dW, reference.dW).toExponential(2)}; repeat ${same ? 'bit-identical' : 'DIFFERS'}`);
}
ops.lnTeams = defaults;

// ---- forward: layernorm8 as the training forward launches it (a block a row) ----
const out = be.alloc([rows, n]);
const layernorm8 = be.kernels.get('layernorm.cu', 'layernorm8', be.defs({ MPT_X_F32: false }));
const ms = time(() => layernorm8.launch([rows], [be.rowThreads8(n)], [x.ptr, 0, w.ptr, 0, out.ptr, n, eps]));
console.log(`LayerNorm forward layernorm8, bf16 [${rows}, ${n}]: ${ms.toFixed(4)} ms (${gbs(4 * count, ms)}; floor at 3.0 TB/s: ${(4 * count / 3e9).toFixed(4)} ms)`);
