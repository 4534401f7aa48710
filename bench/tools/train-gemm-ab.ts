// The training step's QKV GEMMs and fused cross entropy, each variant alone at the mpt-1b step's shapes
// (bf16, 16384 rows = microbatch 8 × 2048, d 2048, vocab 50432): median milliseconds a call over CUDA
// events after a warm-up, and each variant's results against the first one's.
//   - q, k, v = LN_1 output · W{q,k,v}ᵀ: three x·Wᵀ GEMMs (the forward's linear) against one strided-batched GEMM
//   - Wqkv's weight gradient, three TN GEMMs →f32 (written, beta 0) against one strided-batched GEMM
//   - crossEntropyWithOutput with gradients, and the memory it adds at its peak
// `node dist/bench/tools/train-gemm-ab.js step [steps]`: instead, one `mpt bench train` run (microbatch 8,
// no comparison path, no PyTorch) with the settings of the environment (MPT_TRAIN_QKV_BATCHED,
// MPT_TRAIN_RECOMPUTE_LN2), printing where in the step the allocator's peak falls.
import { CudaBackend } from '../../src/backend/cuda/index.js';
import { medianMs, randomOnDevice, relErr } from './device-tools.js';
import { CachingAllocator } from '../../src/backend/cuda/allocator.js';
import { CudaTrainingOps } from '../../src/backend/cuda/training.js';
import type { CudaTensor } from '../../src/backend/cuda/tensor.js';
import { formatTrainBench, runTrainBench } from '../../src/bench/cuda-train-bench.js';

const rows = 16384, d = 2048, vocab = 50432;

if (process.argv[2] === 'step') stepWithPeak(Number(process.argv[3] ?? 5));
else alone();

/** One bench train run, with the phase (op and its call number in the step) in which the allocator's use peaked. */
function stepWithPeak(steps: number): void {
  let phase = 'start', peak = 0, peakPhase = '', calls = new Map<string, number>();
  const ops = CudaTrainingOps.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const name of ['crossEntropyWithOutput', 'attentionForTraining', 'attentionBackward', 'linearBackwardInto', 'layerNormBackwardInto', 'geluBackward', 'adamwStepAll', 'gradNormOnDevice', 'linearRowBlocks', 'linearResidual']) {
    const original = ops[name];
    ops[name] = function (this: unknown, ...a: unknown[]) {
      const n = (calls.get(name) ?? 0) + 1;
      calls.set(name, n);
      phase = `${name} #${n}`;
      try { return original.apply(this, a); } finally { if (name === 'adamwStepAll') calls = new Map(); }
    };
  }
  const alloc = CachingAllocator.prototype.alloc;
  CachingAllocator.prototype.alloc = function (this: CachingAllocator, bytes: number) {
    const ptr = alloc.call(this, bytes);
    const inUse = this.stats().inUse;
    if (inUse > peak) { peak = inUse; peakPhase = `${phase} (after an allocation of ${(bytes / 2 ** 20).toFixed(1)} MiB)`; }
    return ptr;
  };
  const env = ['MPT_TRAIN_QKV_BATCHED', 'MPT_TRAIN_RECOMPUTE_LN2'].map((k) => `${k}=${process.env[k] ?? ''}`).join(' ');
  const r = runTrainBench({ microbatch: 8, steps, compare: false, torch: null, log: () => {} });
  console.log(`[${env}]\n${formatTrainBench(r)}`);
  console.log(`allocator peak ${(peak / 2 ** 30).toFixed(3)} GiB in ${peakPhase}`);
}

function alone(): void {
  const be = new CudaBackend({ dtype: 'bfloat16' });
  const ops = be.training;
  let seed = 11;
  const random = (shape: number[], std: number, dtype: 'bfloat16' | 'float32' = 'bfloat16'): CudaTensor => randomOnDevice(be, shape, seed++, 0, std, dtype);
  // Each call in its own scope: its temporaries go back to the allocator.
  const time = (fn: () => void, reps = 20): number => medianMs(be, () => be.scope(fn), reps);
  const down = (t: CudaTensor) => be.download(t) as Float32Array;
  const tflops = (flops: number, ms: number) => `${(flops / ms / 1e9).toFixed(0)} TFLOP/s`;
  const line = (what: string, ms: number, flops: number, extra = '') => console.log(`  ${what.padEnd(44)} ${ms.toFixed(4)} ms  ${tflops(flops, ms)}${extra}`);

  const x = random([rows, d], 1), wqkv = random([3 * d, d], 0.02);
  be.synchronize();
  const qkvFlops = 3 * 2 * rows * d * d;
  console.log(`q, k, v = x·W{q,k,v}ᵀ, bf16 x [${rows}, ${d}], Wqkv [${3 * d}, ${d}]`);
  const variants = [
    { name: 'three x·Wᵀ GEMMs (linear on row blocks)', run: () => [0, 1, 2].map((i) => be.linear(x, ops.rowBlock(wqkv, i * d, d), null)) },
    { name: 'one strided-batched GEMM (linearRowBlocks)', run: () => ops.linearRowBlocks(x, wqkv, null, 3) },
  ];
  let ref: Float32Array[] | null = null;
  for (const v of variants) {
    const ms = time(() => { v.run(); });
    const outs = be.scope(() => v.run().map((t) => down(t as CudaTensor)));
    ref ??= outs;
    line(v.name, ms, qkvFlops, `; vs first: ${outs.map((o, i) => relErr(o, ref![i]).toExponential(1)).join(', ')}`);
  }

  // Wqkv's weight gradient from dq, dk, dv side by side in one [3, rows, d] block (the batched GEMM needs
  // them one stride apart; the step's dq and dk come from the QK LayerNorms' backward as tensors of their own).
  console.log(`dWqkv = [dq; dk; dv]ᵀ·x (→ float32, written), bf16 dy [3, ${rows}, ${d}]`);
  const dqkv = random([3, rows, d], 1e-3), dW = be.alloc([3 * d, d], 'float32');
  const es = 2;
  const three = () => {
    for (let i = 0; i < 3; i++) {
      ops.gemm.gemm({ m: d, n: d, k: rows, a: dqkv.ptr + i * rows * d * es, aTrans: true, b: x.ptr, bTrans: false, c: dW.ptr + i * d * d * 4, alpha: 1, beta: 0, inType: 'bfloat16', outType: 'float32' });
    }
  };
  const batched = () => ops.gemm.gemm({
    m: d, n: d, k: rows, a: dqkv.ptr, aTrans: true, b: x.ptr, bTrans: false, c: dW.ptr, alpha: 1, beta: 0, inType: 'bfloat16', outType: 'float32',
    batch: { count: 3, strideA: rows * d, strideB: 0, strideC: d * d },
  });
  const msThree = time(three);
  three();
  const want = down(dW);
  line('three TN GEMMs', msThree, qkvFlops);
  const msBatched = time(batched);
  batched();
  line('one strided-batched TN GEMM', msBatched, qkvFlops, `; vs three: ${relErr(down(dW), want).toExponential(1)}`);
  be.release(dqkv); be.release(dW); be.release(wqkv);

  // The fused output layer with cross entropy, with gradients (the step's call: 4 row blocks of 4096;
  // bf16 logits since d850108, float32 before: bench/RESULTS-cuda-train.md).
  console.log(`crossEntropyWithOutput, bf16 x [${rows}, ${d}], table [${vocab}, ${d}], with gradients`);
  const table = random([vocab, d], 0.02), dTable = be.alloc([vocab, d], 'float32');
  const targets = Int32Array.from({ length: rows }, (_, i) => (i % 2048 === 2047 ? -1 : (i * 7919) % 50277));
  const targetsOnDevice = be.upload(targets, [rows], 'int32');
  const call = () => ops.crossEntropyWithOutput({ x, table, targets: targetsOnDevice, hostTargets: targets, logitScale: null, lossScale: 1 / rows, gradients: true, dTableInto: dTable, overwriteDTable: true });
  const ms = time(() => { call(); });
  be.allocator.resetPeak();
  const before = be.allocator.stats().inUse;
  const loss = be.scope(() => down(call().lossSum as CudaTensor)[0]);
  const extra = be.allocator.stats().peak - before;
  line('bf16 logits, dz over them', ms, 3 * 2 * rows * vocab * d, `; mean loss ${(loss / (rows - 8)).toFixed(6)}, ${(extra / 2 ** 30).toFixed(3)} GiB at its peak`);
}
