/**
 * `mpt bench train --device cuda`: training-step throughput of a random model with a preset's exact
 * configuration (mpt-1b-redpajama-200b: 1.3B parameters) at seq 2048 — the same path `mpt train`
 * runs (TrainingGraph, lossAndGradients, grad-norm clipping, AdamW on float32 masters with bf16
 * compute copies) — with tokens/s, MFU, peak GPU memory and a per-kernel breakdown of one step, and
 * the PyTorch baselines (bench/torch_baseline.py --train: eager SDPA with an ALiBi bias, and
 * torch.compile + FlexAttention with an ALiBi score_mod) run in the same command on the same card.
 * The step is src/train/step.ts's; unless `compare` is false its other path (wait-free / waiting for
 * the device inside each step) is timed too, alternating step by step, with the idle time between a
 * step's operations (perKernel) for each.
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
import { inStepExploring, tuningLog, type TuningRecord } from '../backend/cuda/cublaslt-api.js';
import { H100_SXM_BF16_PEAK } from '../backend/cuda/peak-flops.js';
import { MPT_1B_REDPAJAMA_200B, parameterCount, parameterShapes, trainingFlopsPerSequence, type MptConfig } from '../model/config.js';
import { structureParams } from '../model/params.js';
import { TrainingGraph } from '../model/training-forward.js';
import { AdamW } from '../train/optimizer.js';
import { TrainStep, type StepResult } from '../train/step.js';
import { UserError } from '../util/errors.js';
import { median } from '../util/median.js';

export const TRAIN_PRESETS: Record<string, MptConfig> = { 'mpt-1b-redpajama-200b': MPT_1B_REDPAJAMA_200B };
/** Warm-up steps the bench may add while GEMM shapes still explore in the step (the logits' shapes need ~12: 8 candidates × 6 calls at 4 calls a step). */
const MAX_TUNING_WARMUP = 30;

export interface TrainBenchOptions {
  preset?: string;
  microbatch: number;
  seqLen?: number;
  warmup?: number;
  steps?: number;
  /** bench/torch_baseline.py to run for the baselines; null: none. */
  torch?: string | null;
  log?: (line: string) => void;
  /** Also time the other step path (wait-free / waiting), alternating with the default one; default true. */
  compare?: boolean;
}

/** wait-free: nothing in a step waits for the device (src/train/step.ts); waiting: the loss, targets and gradient norm are read back inside each step. */
export type StepMode = 'wait-free' | 'waiting';

export interface ModeResult {
  mode: StepMode;
  /** Each timed step alone (events around it; the host waited for the previous one), and their median. */
  stepsMs: number[];
  medianMs: number;
  /** Milliseconds a step over `steps` steps queued back to back (events around all of them). */
  backToBackMs: number;
  peakBytes: number;
  /** One step with events around every operation: the sum of the operations, first to last, and the idle time between them. */
  kernelsMs: number;
  spanMs: number;
  gapMs: number;
  gaps: number;
  topGaps: StepGap[];
  breakdown: Array<{ name: string; ms: number; calls: number }>;
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
  /** Device milliseconds of one step by kernel (or GEMM shape), largest first (the default path's). */
  breakdown: Array<{ name: string; ms: number; calls: number }>;
  /** The default step path first, then (unless compare is false) the other one, measured in the same run. */
  modes: ModeResult[];
  /** Σ g² over the gradients' sizes (with its round trip): one sum_squares_multi launch, and one launch a tensor (median ms). */
  gradNormMs: { oneLaunch: number; perTensor: number };
  /** The GEMM shapes whose algorithm was chosen by timing (cublaslt-api.ts): the heuristic's first against the chosen. */
  tuning: TuningRecord[];
  torch: Array<Record<string, unknown>>;
}



/** Where the device sat idle between two consecutive operations of a step (events around each). */
export interface StepGap { ms: number; after: string; before: string; hostWaits: number }

/**
 * Time every kernel launch, GEMM, memset and device copy of `fn` with events around each (one eager
 * run), and the idle time between consecutive ones: a gap is the device waiting for the host (a
 * launch not yet made, a host round trip in between: `hostWaits` counts the stream synchronizations
 * the host made there) plus the launch latency itself. The events add a little to every gap.
 */
function perKernel(be: CudaBackend, fn: () => void): { breakdown: Array<{ name: string; ms: number; calls: number }>; gaps: StepGap[]; spanMs: number } {
  const marks: Array<{ name: string; a: CudaEvent; b: CudaEvent; waitsBefore: number }> = [];
  const pool: CudaEvent[] = [];
  const event = () => pool.pop() ?? new CudaEvent(be.ctx);
  let waits = 0, depth = 0;
  const wrap = <T extends object>(proto: T, method: keyof T, label: (self: any, args: any[]) => string) => {
    const original = proto[method] as unknown as (...a: unknown[]) => unknown;
    (proto as any)[method] = function (this: unknown, ...args: unknown[]) {
      if (depth > 0) return original.apply(this, args); // an op made of other timed ops (zeros → memset) is timed once
      const a = event(), b = event(), waitsBefore = waits;
      a.record();
      depth++;
      let r: unknown;
      try { r = original.apply(this, args); } finally { depth--; }
      b.record();
      marks.push({ name: label(this, args), a, b, waitsBefore });
      return r;
    };
    return () => { (proto as any)[method] = original; };
  };
  const syncOriginal = CudaContext.prototype.synchronize;
  CudaContext.prototype.synchronize = function (this: CudaContext) { waits++; syncOriginal.call(this); };
  const undo = [
    wrap(Kernel.prototype, 'launch', (k: Kernel) => k.name),
    wrap(TrainingGemm.prototype, 'gemm', (_s, [g]) => `gemm ${g.aTrans ? 'T' : 'N'}${g.bTrans ? 'T' : 'N'} ${g.m}×${g.n}×${g.k} ${g.outType === 'float32' ? '→f32' : ''}`),
    wrap(CublasLt.prototype, 'matmul', (_s, [m]) => `gemm x·Wᵀ ${m.rows}×${m.outFeatures}×${m.inFeatures}${m.accumulate ? ' +=' : m.residual ? ' + residual' : ''}`),
    wrap(CudaContext.prototype, 'copyDevice', () => 'device-to-device copy'),
    wrap(CudaContext.prototype, 'fill32', () => 'memset (zeroing)'),
    wrap(CudaContext.prototype, 'copyIn', () => 'host→device copy (waits)'),
    wrap(CudaContext.prototype, 'copyInPinned', () => 'host→device copy (pinned)'),
    wrap(CudaContext.prototype, 'copyInAsync', () => 'host→device copy (pageable, async)'),
    wrap(CudaContext.prototype, 'copyOut', () => 'device→host copy (waits)'),
    wrap(CudaContext.prototype, 'copyOutAsync', () => 'device→host copy (pinned)'),
    wrap(CudaBackend.prototype, 'zeros', () => 'memset (zeroing)'),
    () => { CudaContext.prototype.synchronize = syncOriginal; },
  ];
  try { fn(); } finally { for (const u of undo) u(); }
  be.synchronize();
  const totals = new Map<string, { ms: number; calls: number }>();
  const gaps: StepGap[] = [];
  marks.forEach((m, i) => {
    const e = totals.get(m.name) ?? { ms: 0, calls: 0 };
    e.ms += m.b.since(m.a);
    e.calls++;
    totals.set(m.name, e);
    if (i > 0) gaps.push({ ms: m.a.since(marks[i - 1].b), after: marks[i - 1].name, before: m.name, hostWaits: m.waitsBefore - marks[i - 1].waitsBefore });
  });
  const spanMs = marks.length > 0 ? marks[marks.length - 1].b.since(marks[0].a) : 0;
  for (const m of marks) { m.a.destroy(); m.b.destroy(); }
  for (const e of pool) e.destroy();
  return { breakdown: [...totals].map(([name, v]) => ({ name, ...v })).sort((x, y) => y.ms - x.ms), gaps, spanMs };
}

export function runTrainBench(o: TrainBenchOptions): TrainBenchResult {
  const log = o.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const presetName = o.preset ?? 'mpt-1b-redpajama-200b';
  const c = TRAIN_PRESETS[presetName];
  if (!c) throw new UserError(`unknown preset "${presetName}"; known: ${Object.keys(TRAIN_PRESETS).join(', ')}`);
  const t = o.seqLen ?? c.maxSeqLen, mb = o.microbatch, warmup = o.warmup ?? 10, steps = o.steps ?? 12;
  if (!Number.isInteger(mb) || mb < 1) throw new UserError(`--microbatch must be a positive integer, got ${mb}`);
  if (!Number.isInteger(steps) || steps < 1) throw new UserError(`--steps must be a positive integer, got ${steps}`);
  if (!Number.isInteger(warmup) || warmup < 0) throw new UserError(`--warmup must be 0 or a positive integer, got ${warmup}`);
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
  // The step of `mpt train` (src/train/step.ts) in the default path, and, for the comparison, the other
  // one (wait-free: nothing in a step waits for the device; waiting: the loss, the targets and the
  // gradient norm read back inside every step, as before). Both update the same weights.
  const ops = be.training, primary: StepMode = ops.waitFree ? 'wait-free' : 'waiting';
  const modes: StepMode[] = o.compare === false ? [primary] : [primary, primary === 'wait-free' ? 'waiting' : 'wait-free'];
  const steppers = new Map(modes.map((mode) => {
    ops.waitFree = mode === 'wait-free';
    return [mode, new TrainStep(be, graph, optimizer, 1)] as const;
  }));
  let stepNumber = 0;
  const runStep = (mode: StepMode) => {
    ops.waitFree = mode === 'wait-free';
    const ids = batch();
    steppers.get(mode)!.run(++stepNumber, 1, () => ({ tokens: ids, rows: mb }), 1e-4, 1 / (mb * (t - 1)));
  };
  const timed = (fn: () => void) => {
    const a = new CudaEvent(be.ctx), b = new CudaEvent(be.ctx);
    a.record();
    fn();
    b.record();
    const ms = b.since(a);
    a.destroy(); b.destroy();
    return ms;
  };
  const perMode = new Map(modes.map((mode) => [mode, { stepsMs: [] as number[], peak: 0, last: null as StepResult | null }]));
  // The warm-up: `warmup` steps, then more (up to MAX_TUNING_WARMUP) while GEMM shapes still choose their
  // algorithm in the step (gemmTuning.inStep: the logits' shapes, called 4 times a step, take ~12 steps),
  // so that the timed steps run the chosen algorithms, as a long training run does. Then step by step, the
  // modes alternating (and their order too), each step timed alone with events.
  let warmupSteps = 0;
  for (let i = 0; i - warmupSteps < steps; i++) {
    const warming = i < warmup || (i < warmup + MAX_TUNING_WARMUP && inStepExploring().length > 0);
    if (warming) warmupSteps++;
    for (const mode of i % 2 === 0 ? modes : [...modes].reverse()) {
      const m = perMode.get(mode)!;
      be.allocator.resetPeak();
      const ms = timed(() => runStep(mode));
      m.last = steppers.get(mode)!.settle().pop() ?? null;
      m.peak = Math.max(m.peak, be.allocator.stats().peak);
      if (!warming) m.stepsMs.push(ms);
      log(`step ${i + 1}${warming ? ' (warm-up)' : ''} ${mode}: ${ms.toFixed(1)} ms (loss ${((m.last?.lossSum ?? NaN) / (mb * (t - 1))).toFixed(4)}, grad norm ${m.last?.gradNorm.toFixed(4)})`);
    }
  }
  if (warmupSteps > warmup) log(`(warm-up extended to ${warmupSteps} steps while GEMM shapes chose their algorithm in the step)`);
  // Back to back, as the training loop runs them between two log lines: one pair of events around all.
  const backToBack = new Map(modes.map((mode) => {
    const ms = timed(() => { for (let i = 0; i < steps; i++) runStep(mode); }) / steps;
    steppers.get(mode)!.settle();
    log(`${steps} steps back to back, ${mode}: ${ms.toFixed(1)} ms a step`);
    return [mode, ms] as const;
  }));
  const comparison: ModeResult[] = modes.map((mode) => {
    const m = perMode.get(mode)!;
    ops.waitFree = mode === 'wait-free';
    const timeline = perKernel(be, () => runStep(mode));
    steppers.get(mode)!.settle();
    const kernelsMs = timeline.breakdown.reduce((sum, b) => sum + b.ms, 0);
    return {
      mode, stepsMs: m.stepsMs, medianMs: median(m.stepsMs), backToBackMs: backToBack.get(mode)!, peakBytes: m.peak + 2 * (32 << 20), // + the two cuBLASLt workspaces
      kernelsMs, spanMs: timeline.spanMs, gapMs: timeline.gaps.reduce((sum, g) => sum + g.ms, 0), gaps: timeline.gaps.length,
      topGaps: [...timeline.gaps].sort((x, y) => y.ms - x.ms).slice(0, 8), breakdown: timeline.breakdown,
    };
  });
  ops.waitFree = primary === 'wait-free';
  for (const stepper of steppers.values()) stepper.dispose();
  // The gradient norm's reduction over tensors of the gradients' sizes (the float32 masters), in one
  // launch and in one launch a tensor, alternating: events around each, median of 5.
  const squares = new Map<string, number[]>([['one launch', []], ['one a tensor', []]]);
  const tensors = [...masters.values()];
  for (let i = 0; i < 10; i++) {
    const way = i % 2 === 0 ? 'one launch' : 'one a tensor';
    ops.squaresInOneLaunch = way === 'one launch';
    squares.get(way)!.push(timed(() => be.sumOfSquaresAll(tensors)));
  }
  ops.squaresInOneLaunch = true;
  const gradNormMs = { oneLaunch: median(squares.get('one launch')!), perTensor: median(squares.get('one a tensor')!) };
  const main = comparison[0], ms = main.medianMs;
  const tokensPerSecond = (mb * t) / (ms / 1000);
  const mfu = (tokensPerSecond / t) * trainingFlopsPerSequence(c, t) / H100_SXM_BF16_PEAK;
  const peakMemoryBytes = main.peakBytes;
  log(`median step ${ms.toFixed(1)} ms: ${tokensPerSecond.toFixed(0)} tokens/s, MFU ${(100 * mfu).toFixed(1)}%, peak ${(peakMemoryBytes / 2 ** 30).toFixed(2)} GiB`);
  const result: TrainBenchResult = {
    device: be.device.name, preset: presetName, parameters: parameterCount(c), microbatch: mb, seqLen: t, msPerStep: ms, stepsMs: main.stepsMs,
    tokensPerSecond, mfu, peakMemoryBytes, breakdown: main.breakdown, modes: comparison, gradNormMs, tuning: [...tuningLog], torch: [],
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
  for (const m of r.modes) {
    lines.push(`step, ${m.mode.padEnd(9)} ${m.medianMs.toFixed(1)} ms median of ${m.stepsMs.length} (${m.stepsMs.map((x) => x.toFixed(1)).join(', ')}); back to back ${m.backToBackMs.toFixed(1)} ms; peak ${gib(m.peakBytes)}`);
    lines.push(`  one step with events around each operation: ${m.kernelsMs.toFixed(1)} ms in operations, ${m.gapMs.toFixed(1)} ms idle between ${m.gaps + 1} of them, ${m.spanMs.toFixed(1)} ms first to last; longest gaps:`);
    for (const g of m.topGaps) lines.push(`    ${g.ms.toFixed(3).padStart(7)} ms  after ${g.after}, before ${g.before}${g.hostWaits ? ` (${g.hostWaits} host wait${g.hostWaits > 1 ? 's' : ''} between)` : ''}`);
  }
  if (r.modes.length > 1) {
    const [main, other] = r.modes, byName = (m: ModeResult) => new Map(m.breakdown.map((b) => [b.name, b]));
    const mine = byName(main), theirs = byName(other);
    const names = new Set([...mine.keys(), ...theirs.keys()]);
    const differences = [...names].map((name) => {
      const a = mine.get(name), b = theirs.get(name);
      return { name, a: a?.ms ?? 0, b: b?.ms ?? 0, ca: a?.calls ?? 0, cb: b?.calls ?? 0 };
    }).filter((d) => Math.abs(d.a - d.b) >= 0.1 || d.ca !== d.cb).sort((x, y) => Math.abs(y.a - y.b) - Math.abs(x.a - x.b));
    lines.push(`operations that differ, ${main.mode} against ${other.mode} (ms in one step, calls):`);
    for (const d of differences.slice(0, 14)) lines.push(`  ${d.a.toFixed(2).padStart(8)} ms ${String(d.ca).padStart(4)}×  vs ${d.b.toFixed(2).padStart(8)} ms ${String(d.cb).padStart(4)}×  ${d.name}`);
  }
  lines.push(`gradient norm (Σ g² of ${(r.parameters / 1e9).toFixed(2)}B float32 values and its read-back): one launch ${r.gradNormMs.oneLaunch.toFixed(2)} ms, one launch a tensor ${r.gradNormMs.perTensor.toFixed(2)} ms (median of 5 each)`);
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
