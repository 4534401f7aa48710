/**
 * `mpt bench train --device cuda`: training-step throughput of a random model with a preset's exact
 * configuration (mpt-1b-redpajama-200b: 1.3B parameters) at seq 2048 — the same path `mpt train`
 * runs (TrainingGraph, lossAndGradients, grad-norm clipping, AdamW on float32 masters with bf16
 * compute copies) — with tokens/s, MFU, peak GPU memory and a per-kernel breakdown of one step, and
 * the PyTorch baselines (bench/torch_baseline.py --train: eager SDPA with an ALiBi bias, and
 * torch.compile + FlexAttention with an ALiBi score_mod) run in the same command on the same card.
 *
 * MFU counts llm-foundry's FLOPs per sequence, 3·(2·n_params·T + n_layers·4·d_model·T²), over 989
 * TFLOP/s (the H100 SXM's dense bf16 peak), as BASELINES.md does.
 */
import { execFileSync } from 'node:child_process';
import { elementCount } from '../backend/backend.js';
import { CudaBackend } from '../backend/cuda/index.js';
import { CudaContext, CudaEvent, Kernel } from '../backend/cuda/driver.js';
import { TrainingGemm } from '../backend/cuda/training-gemm.js';
import { CublasLt } from '../backend/cuda/cublaslt.js';
import { tuningLog, type TuningRecord } from '../backend/cuda/cublaslt-api.js';
import { lossAndGradients, zeroGradients } from '../model/backward.js';
import { MPT_1B_REDPAJAMA_200B, parameterCount, parameterShapes, trainingFlopsPerSequence, type MptConfig } from '../model/config.js';
import { structureParams } from '../model/params.js';
import { TrainingGraph } from '../model/training-forward.js';
import { AdamW, clipGradNorm } from '../train/optimizer.js';
import { UserError } from '../util/errors.js';

export const TRAIN_PRESETS: Record<string, MptConfig> = { 'mpt-1b-redpajama-200b': MPT_1B_REDPAJAMA_200B };
const PEAK_FLOPS = 989e12;

export interface TrainBenchOptions {
  preset?: string;
  microbatch: number;
  seqLen?: number;
  warmup?: number;
  steps?: number;
  /** bench/torch_baseline.py to run for the baselines; null: none. */
  torch?: string | null;
  log?: (line: string) => void;
}

export interface TrainBenchResult {
  device: string;
  preset: string;
  parameters: number;
  microbatch: number;
  seqLen: number;
  msPerStep: number;
  stepsMs: number[];
  tokensPerSecond: number;
  mfu: number;
  peakMemoryBytes: number;
  /** Device milliseconds of one step by kernel (or GEMM shape), largest first. */
  breakdown: Array<{ name: string; ms: number; calls: number }>;
  /** The GEMM shapes whose algorithm was chosen by timing (cublaslt-api.ts): the heuristic's first against the chosen. */
  tuning: TuningRecord[];
  torch: Array<Record<string, unknown>>;
}


const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Time every kernel launch and GEMM of `fn` with events around each (one eager run). */
function perKernel(be: CudaBackend, fn: () => void): Array<{ name: string; ms: number; calls: number }> {
  const marks: Array<{ name: string; a: CudaEvent; b: CudaEvent }> = [];
  const pool: CudaEvent[] = [];
  const event = () => pool.pop() ?? new CudaEvent(be.ctx);
  const wrap = <T extends object>(proto: T, method: keyof T, label: (self: any, args: any[]) => string) => {
    const original = proto[method] as unknown as (...a: unknown[]) => unknown;
    (proto as any)[method] = function (this: unknown, ...args: unknown[]) {
      const a = event(), b = event();
      a.record();
      const r = original.apply(this, args);
      b.record();
      marks.push({ name: label(this, args), a, b });
      return r;
    };
    return () => { (proto as any)[method] = original; };
  };
  const undo = [
    wrap(Kernel.prototype, 'launch', (k: Kernel) => k.name),
    wrap(TrainingGemm.prototype, 'gemm', (_s, [g]) => `gemm ${g.aTrans ? 'T' : 'N'}${g.bTrans ? 'T' : 'N'} ${g.m}×${g.n}×${g.k} ${g.outType === 'float32' ? '→f32' : ''}`),
    wrap(CublasLt.prototype, 'matmul', (_s, [m]) => `gemm x·Wᵀ ${m.rows}×${m.outFeatures}×${m.inFeatures}${m.accumulate ? ' +=' : m.residual ? ' + residual' : ''}`),
    wrap(CudaContext.prototype, 'copyDevice', () => 'device-to-device copy'),
  ];
  try { fn(); } finally { for (const u of undo) u(); }
  be.synchronize();
  const totals = new Map<string, { ms: number; calls: number }>();
  for (const m of marks) {
    const e = totals.get(m.name) ?? { ms: 0, calls: 0 };
    e.ms += m.b.since(m.a);
    e.calls++;
    totals.set(m.name, e);
    m.a.destroy(); m.b.destroy();
  }
  for (const e of pool) e.destroy();
  return [...totals].map(([name, v]) => ({ name, ...v })).sort((x, y) => y.ms - x.ms);
}


export function runTrainBench(o: TrainBenchOptions): TrainBenchResult {
  const log = o.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const presetName = o.preset ?? 'mpt-1b-redpajama-200b';
  const c = TRAIN_PRESETS[presetName];
  if (!c) throw new UserError(`unknown preset "${presetName}"; known: ${Object.keys(TRAIN_PRESETS).join(', ')}`);
  const t = o.seqLen ?? c.maxSeqLen, mb = o.microbatch, warmup = o.warmup ?? 2, steps = o.steps ?? 5;
  if (!Number.isInteger(mb) || mb < 1) throw new UserError(`--microbatch must be a positive integer, got ${mb}`);
  const be = new CudaBackend({ dtype: 'bfloat16' });
  log(`device: ${be.device.name}; ${presetName}, ${parameterCount(c).toLocaleString('en-US')} parameters, microbatch ${mb} × ${t} tokens`);

  // float32 masters (random, made on the device), bf16 compute copies, AdamW moments.
  const masters = new Map<string, ReturnType<CudaBackend['alloc']>>(), copies = new Map<string, ReturnType<CudaBackend['alloc']>>();
  let seed = 1;
  for (const [name, shape] of parameterShapes(c)) {
    const n = elementCount(shape);
    const m = be.persistent(shape, 'float32');
    const isNorm = shape.length === 1;
    be.kernels.get('elementwise.cu', 'fill_normal', { MPT_BF16: false }).launch([Math.min(Math.ceil(n / 256), 2048)], [256], [m.ptr, n, seed++, isNorm ? 1 : 0, isNorm ? 0.1 : 0.02]);
    const copy = be.persistent(shape, 'bfloat16');
    be.launch1d('elementwise.cu', 'f32_to_t', n, [m.ptr, copy.ptr, n], { MPT_BF16: true });
    masters.set(name, m);
    copies.set(name, copy);
  }
  const graph = new TrainingGraph(c, be, structureParams(c, copies));
  const optimizer = new AdamW(be, { kind: 'decoupled_adamw', lr: 1e-4, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0 }, masters, copies);
  be.synchronize();
  let s = 12345;
  const batch = () => Int32Array.from({ length: mb * t }, () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return 2 + (s % (c.vocabSize - 200)); });
  const step = (ids: Int32Array) => be.scope(() => {
    const grads = zeroGradients(c, be);
    be.scope(() => lossAndGradients(graph, ids, mb, grads, 1 / (mb * (t - 1))));
    clipGradNorm(be, grads, 1);
    optimizer.update(grads, 1e-4);
  });
  be.allocator.resetPeak();
  const times: number[] = [];
  for (let i = 0; i < warmup + steps; i++) {
    const ids = batch();
    const a = new CudaEvent(be.ctx), b = new CudaEvent(be.ctx);
    a.record();
    step(ids);
    b.record();
    const ms = b.since(a);
    if (i >= warmup) times.push(ms);
    log(`step ${i + 1}${i < warmup ? ' (warm-up)' : ''}: ${ms.toFixed(1)} ms`);
    a.destroy(); b.destroy();
  }
  const ms = median(times);
  const tokensPerSecond = (mb * t) / (ms / 1000);
  const mfu = (tokensPerSecond / t) * trainingFlopsPerSequence(c, t) / PEAK_FLOPS;
  const peakMemoryBytes = be.allocator.stats().peak + 2 * (32 << 20); // + the two cuBLASLt workspaces
  log(`median step ${ms.toFixed(1)} ms: ${tokensPerSecond.toFixed(0)} tokens/s, MFU ${(100 * mfu).toFixed(1)}%, peak ${(peakMemoryBytes / 2 ** 30).toFixed(2)} GiB`);
  const breakdown = perKernel(be, () => step(batch()));
  const result: TrainBenchResult = {
    device: be.device.name, preset: presetName, parameters: parameterCount(c), microbatch: mb, seqLen: t, msPerStep: ms, stepsMs: times,
    tokensPerSecond, mfu, peakMemoryBytes, breakdown, tuning: [...tuningLog], torch: [],
  };
  // Give the device memory back before the baselines run (they are child processes on the same card).
  for (const map of [masters, copies, optimizer.m, optimizer.v]) for (const t of map.values()) be.release(t);
  be.allocator.emptyCache();
  if (o.torch) {
    for (const mode of ['eager', 'compile']) {
      log(`running the PyTorch baseline (${mode}) …`);
      try {
        const out = execFileSync('python3', [o.torch, '--train', mode, '--microbatch', String(mb), '--seq', String(t), '--steps', String(steps), '--warmup', String(warmup + 1)],
          { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
        const line = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
        if (line) result.torch.push(JSON.parse(line));
      } catch (error) {
        result.torch.push({ mode, error: (error as Error).message.split('\n')[0] });
      }
    }
  }
  return result;
}

export function formatTrainBench(r: TrainBenchResult): string {
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
  const stepMs = r.msPerStep;
  const lines = [
    `device       ${r.device}`,
    `model        ${r.preset} (${r.parameters.toLocaleString('en-US')} parameters), random weights, microbatch ${r.microbatch} × ${r.seqLen}`,
    `mpt-ts       ${r.tokensPerSecond.toFixed(0)} tokens/s, MFU ${(100 * r.mfu).toFixed(1)}%, step ${stepMs.toFixed(1)} ms (median of ${r.stepsMs.length}), peak ${gib(r.peakMemoryBytes)}`,
  ];
  for (const t of r.torch) {
    if (t.error) { lines.push(`torch ${t.mode}  failed: ${t.error}`); continue; }
    const tps = t.tokens_per_s as number;
    lines.push(`torch ${String(t.mode).padEnd(7)} ${tps.toFixed(0)} tokens/s, MFU ${(100 * (t.mfu as number)).toFixed(1)}%, peak ${gib(t.peak_memory_bytes as number)}; mpt-ts/torch ${(r.tokensPerSecond / tps).toFixed(2)}×`);
  }
  const total = r.breakdown.reduce((s, b) => s + b.ms, 0);
  lines.push(`one step by kernel (events around each launch; ${total.toFixed(1)} ms of device time in kernels and GEMMs):`);
  for (const b of r.breakdown.slice(0, 30)) lines.push(`  ${b.ms.toFixed(2).padStart(9)} ms ${(100 * b.ms / total).toFixed(1).padStart(5)}%  ${String(b.calls).padStart(5)}×  ${b.name}`);
  if (r.tuning.length > 0) {
    lines.push(`GEMM algorithms chosen by timing the heuristic's candidates (first use of each shape; ms a call):`);
    for (const t of r.tuning) {
      lines.push(`  ${t.what}: ${t.candidates} candidates, #${t.chosen} ${t.bestMs.toFixed(3)} ms against the heuristic's first ${t.firstMs.toFixed(3)} ms`);
    }
  }
  return lines.join('\n');
}
