// The training step's memory-bound forward kernels and GELU's backward, each alone at the training shape
// (mpt-1b, microbatch 8 × 2048: LayerNorm over bf16 [16384, 2048], GELU over bf16 [16384, 8192]): the
// kernel before this work against its replacement's launch shapes, median ms a call over CUDA events
// after a warm-up, the bandwidth that makes, and each result's bits against the old kernel's.
// Two ways of timing: back to back ("warm", the call before left its own output in L2), and right after
// a kernel that wrote the input ("after a write", as the step runs them: the producing GEMM's last rows
// may still be in L2). Run on a GPU: node dist/bench/tools/memk-bench.js
import { CudaBackend } from '../../src/backend/cuda/index.js';
import { medianMs, randomOnDevice } from './device-tools.js';
import type { CudaTensor } from '../../src/backend/cuda/tensor.js';
import type { Tensor } from '../../src/backend/backend.js';
import { GELU_TABLE_SHAPE, type GeluTableShape } from '../../src/backend/cuda/gelu-table.js';

const be = new CudaBackend({ dtype: 'bfloat16' });
const g = be.training;
const eps = 1e-5;
let seed = 11;
/** A bf16 tensor of normal values made on the device. */
const random = (shape: number[], mean: number, std: number) => randomOnDevice(be, shape, seed++, mean, std);
/** Median ms of `fn` over `reps` calls (events around each alone), after 3 untimed ones; `before` runs untimed ahead of each. */
const time = (fn: () => void, before: (() => void) | null, reps = 21): number => medianMs(be, fn, reps, before);
/** Rewrites t in place (x·1 through `scale`): the input as its producer would just have written it. */
const rewrite = (t: CudaTensor) => () => { const n = t.shape.reduce((a, b) => a * b, 1); be.launch1d('elementwise.cu', 'scale', n, [t.ptr, t.ptr, 1, n]); };
/** The first and last 256 rows of t (a check of the bits, not of everything: the tests check every value). */
const bits = (t: CudaTensor) => {
  const r = t.shape[0], a = be.download(g.rowBlock(t, 0, 256)) as Float32Array, b = be.download(g.rowBlock(t, r - 256, 256)) as Float32Array;
  const both = new Float32Array(a.length + b.length);
  both.set(a); both.set(b, a.length);
  return both;
};
function sameBits(a: Float32Array, b: Float32Array): string {
  const x = new Uint32Array(a.buffer), y = new Uint32Array(b.buffer);
  let differ = 0;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) differ++;
  return differ ? `${differ} elements DIFFER` : 'bit-identical';
}
const rate = (bytes: number, ms: number) => `${(bytes / ms / 1e9).toFixed(2)} TB/s`;
const line = (name: string, bytes: number, warm: number, after: number, check: string) =>
  console.log(`  ${name.padEnd(46)} warm ${warm.toFixed(4)} ms (${rate(bytes, warm)}), after a write ${after.toFixed(4)} ms (${rate(bytes, after)}); ${check}`);
console.log(`device: ${be.device.name}, ${be.device.multiprocessors} SMs`);

// ---- LayerNorm forward ----
for (const rows of [16384, 2048]) {
  const d = 2048;
  const x = random([rows, d], 0.3, 1.5), w = random([d], 1, 0.1), b = random([d], 0, 0.1), out = be.alloc([rows, d]);
  const bytes = 4 * rows * d;
  console.log(`LayerNorm bf16 [${rows}, ${d}], no bias (${(bytes / 1e6).toFixed(1)} MB moved; 3.0 TB/s would be ${(bytes / 3e9).toFixed(4)} ms)`);
  const run = () => be.layerNormInto(x, null, w, null, out, rows, d, eps);
  be.layerNormWarpRows = false;
  const old = time(run, null), oldAfter = time(run, rewrite(x));
  run();
  const want = bits(out), wantBias = (() => { be.layerNormInto(x, null, w, b, out, rows, d, eps); return bits(out); })();
  line('layernorm8 (a block a row)', bytes, old, oldAfter, 'the reference');
  be.layerNormWarpRows = true;
  be.layerNormWarpRowsFrom = 1;
  for (const warps of [2, 4, 8]) {
    be.layerNormRowWarps = warps;
    const ms = time(run, null), after = time(run, rewrite(x));
    run();
    const same = sameBits(bits(out), want);
    be.layerNormInto(x, null, w, b, out, rows, d, eps);
    line(`layernorm_rows8, ${warps} rows a block`, bytes, ms, after, `${same}; with bias ${sameBits(bits(out), wantBias)}`);
  }
  be.layerNormRowWarps = 4;
  be.release(x); be.release(out);
}

// ---- GELU forward and backward ----
const rows = 16384, hidden = 8192, n = rows * hidden;
const x = random([rows, hidden], 0, 1), dy = random([rows, hidden], 0, 0.01);
const shapes: GeluTableShape[] = [
  { ...GELU_TABLE_SHAPE },
  { threads: 512, unroll: 1, blocksPerSM: 4, reverse: false },
  { threads: 512, unroll: 4, blocksPerSM: 2, reverse: false },
  { threads: 256, unroll: 2, blocksPerSM: 8, reverse: false },
  { threads: 512, unroll: 2, blocksPerSM: 3, reverse: false },
  { threads: 512, unroll: 2, blocksPerSM: 16, reverse: false },
  { threads: 512, unroll: 2, blocksPerSM: 4, reverse: true },
];
const label = (s: GeluTableShape) => `table, ${s.threads} threads, ${s.unroll} a turn, ${s.blocksPerSM}/SM${s.reverse ? ', reverse' : ''}`;
/**
 * One GELU direction: the plain kernel (the reference: its bits) against the table kernel at every
 * launch shape (the backend's geluTable and geluTableShape, put back to the default at the end), each
 * alone and right after `input` was rewritten.
 */
function compareShapes(what: string, bytes: number, plain: string, run: () => Tensor, input: CudaTensor): void {
  console.log(`${what} bf16 [${rows}, ${hidden}] (${(bytes / 1e6).toFixed(1)} MB moved; 3.0 TB/s would be ${(bytes / 3e9).toFixed(4)} ms)`);
  const call = () => be.scope(() => { run(); });
  be.geluTable = false;
  const old = time(call, null), oldAfter = time(call, rewrite(input));
  const wantT = run() as CudaTensor, want = bits(wantT);
  be.release(wantT);
  line(plain, bytes, old, oldAfter, 'the reference');
  be.geluTable = true;
  for (const s of shapes) {
    be.geluTableShape = s;
    const ms = time(call, null), after = time(call, rewrite(input));
    const got = run() as CudaTensor;
    line(label(s), bytes, ms, after, sameBits(bits(got), want));
    be.release(got);
  }
  be.geluTableShape = { ...GELU_TABLE_SHAPE };
}
compareShapes('GELU', 4 * n, 'gelu_bf16x8 (erff an element)', () => be.gelu(x), x);
compareShapes('GELU backward', 6 * n, 'gelu_backward8 (erff, expf an element)', () => g.geluBackward(dy, x), dy);
