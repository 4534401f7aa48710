// The training step's GEMM algorithms timed two ways: as tuning times them today (a burst of 3 launches
// on a cool card, inputs hot in L2) and sustained (the card at its power cap, each candidate back to
// back with L2 flushed before every launch, candidates interleaved, medians), to see whether the
// ranking of cuBLASLt's candidates changes under the power cap (bench/RESULTS-cuda-train.md).
//
// `node dist/bench/tools/gemm-power.js`: one step of the 1.3B preset (microbatch 8 × 2048) in which the
// tuning of every GEMM shape (LtHandle.choose, through gemmTuning.observe: the real descriptors, inputs
// and epilogues of both front ends) first times up to 32 of the heuristic's candidates three ways:
//   burst      today's timing (1 warm-up + 3 launches, mean)
//   sustained  up to 100 ms a candidate a round (1.6 s a shape in all), 2 rounds: the best estimate of a call in the step
//   tuning     what MPT_GEMM_TUNE_SUSTAINED=1 runs (gemmTuning.sustainedMs × rounds), to check it picks as the long one does
// then prints a table per shape and the sum over one step (calls a step × sustained ms) for the choice
// each way makes (pickFastest, the heuristic's first unless > 3 % slower).
// `node dist/bench/tools/gemm-power.js step [steps] [warmup]`: one `mpt bench train` run (microbatch 8,
// the default step path only, no PyTorch), every shape tuned afresh (stored choices ignored), with the
// tuning the environment selects (MPT_GEMM_TUNE_SUSTAINED=1 with MPT_GEMM_TUNE_IN_STEP=0; MPT_GEMM_TUNE_IN_STEP=0 alone: burst; else in-step), and
// the tuning's total wall time; in-step, also the calls each shape explored and any shape still exploring
// when the timed steps began (warmup: 2 by default; give every side of an A/B the same).
import { runTrainBench, formatTrainBench } from '../../src/bench/cuda-train-bench.js';
import { describeAlgo, gemmTuning, inStepExploring, LtHandle, pickFastest, tuningLog, type TuningTrial } from '../../src/backend/cuda/cublaslt-api.js';
import { TrainStep } from '../../src/train/step.js';

if (process.argv[2] === 'step') step(Number(process.argv[3] ?? 12), Number(process.argv[4] ?? 2));
else measure();

function step(steps: number, warmup: number): void {
  gemmTuning.stored = false; // each process tunes afresh: an A/B must not inherit the other side's choices
  const mode = gemmTuning.inStep !== 'off' ? `in-step (${gemmTuning.inStep})` : gemmTuning.sustained ? 'sustained' : 'burst';
  // In-step: which shapes still explore when the timed steps begin (the step after the warm-up's last).
  let stepsRun = 0, exploringAtTimed: string[] = [];
  const run = TrainStep.prototype.run;
  TrainStep.prototype.run = function (this: TrainStep, ...a: Parameters<TrainStep['run']>) {
    if (stepsRun++ === warmup) exploringAtTimed = inStepExploring();
    return run.apply(this, a);
  };
  const r = runTrainBench({ microbatch: 8, steps, warmup, compare: false, torch: null, log: (line) => process.stderr.write(line + '\n') });
  const tuned = r.tuning.reduce((s, t) => s + (t.tuningMs ?? 0), 0);
  console.log(`[MPT_GEMM_TUNE_SUSTAINED=${process.env.MPT_GEMM_TUNE_SUSTAINED ?? ''} MPT_GEMM_TUNE_IN_STEP=${process.env.MPT_GEMM_TUNE_IN_STEP ?? ''}: ${mode} tuning, ${r.tuning.length} shapes ${mode === 'in-step' ? `chosen, the last ${(Math.max(0, ...r.tuning.map((t) => t.tuningMs ?? 0)) / 1000).toFixed(2)} s after its first call` : `in ${(tuned / 1000).toFixed(2)} s`}, warm-up ${warmup} steps]`);
  if (gemmTuning.inStep !== 'off') {
    console.log(`in-step: ${exploringAtTimed.length} shapes still exploring when the timed steps began${exploringAtTimed.length ? ` (${exploringAtTimed.join('; ')})` : ''}; ${inStepExploring().length} at the end`);
    for (const t of r.tuning) console.log(`  ${t.what}: ${t.timing}, ${t.calls ?? '-'} calls explored, #${t.chosen} (${t.samples ?? '-'} samples) ${t.bestMs.toFixed(3)} ms against #0 ${t.firstMs.toFixed(3)} ms, decided after ${((t.tuningMs ?? 0) / 1000).toFixed(2)} s`);
  }
  console.log(formatTrainBench(r));
}

interface Shape { what: string; key: string; flops: number; algos: string[]; burst: number[]; sustained: number[]; tuning: number[]; longMs: number }

function measure(): void {
  const shapes: Shape[] = [];
  const calls = new Map<string, number>();
  let inTuning = 0, steps = 0;
  gemmTuning.candidates = 32;
  gemmTuning.stored = false;
  gemmTuning.sustained = false; // the tuning's own timing after the observer: a cheap burst
  gemmTuning.observe = (trial: TuningTrial) => {
    const n = trial.algos.length;
    const longMs = Math.min(100, 1600 / (2 * n)); // at most ~1.6 s of sustained runs a shape
    const burst = trial.burst();
    const sustained = trial.sustained({ ms: longMs, rounds: 2 });
    const tuning = trial.sustained();
    shapes.push({ what: trial.what, key: trial.key, flops: trial.flops, algos: trial.algos.map(describeAlgo), burst, sustained, tuning, longMs });
    process.stderr.write(`measured ${trial.what}: ${n} candidates\n`);
  };
  // Real launches a step by shape: LtHandle.matmul outside choose (whose trials launch too), over the steps run.
  const proto = LtHandle.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const choose = proto.choose, matmul = proto.matmul, run = TrainStep.prototype.run;
  proto.choose = function (this: unknown, ...a: unknown[]) { inTuning++; try { return choose.apply(this, a); } finally { inTuning--; } };
  proto.matmul = function (this: unknown, ...a: unknown[]) { if (inTuning === 0) calls.set(a[0] as string, (calls.get(a[0] as string) ?? 0) + 1); return matmul.apply(this, a); };
  TrainStep.prototype.run = function (this: TrainStep, ...a: Parameters<TrainStep['run']>) { steps++; return run.apply(this, a); };
  const started = performance.now();
  const r = runTrainBench({ microbatch: 8, steps: 1, warmup: 0, compare: false, torch: null, log: (line) => process.stderr.write(line + '\n') });
  console.log(`${r.device}; ${shapes.length} GEMM shapes tuned in the step, ${steps} steps run, ${((performance.now() - started) / 1000).toFixed(1)} s in all`);

  const f = (ms: number) => (Number.isFinite(ms) ? ms.toFixed(4) : 'fails');
  let today = 0, best = 0, tuned = 0, todayBurst = 0;
  const changed: string[] = [];
  for (const s of shapes) {
    const perStep = (calls.get(s.what) ?? 0) / Math.max(steps, 1);
    // Today's rule on today's candidate count; the sustained rules on all the candidates.
    const b = pickFastest(s.burst.slice(0, 16), gemmTuning.margin), l = pickFastest(s.sustained, gemmTuning.margin), t = pickFastest(s.tuning, gemmTuning.margin);
    console.log(`\n${s.what}  (${perStep} calls a step, ${(s.flops / 1e9).toFixed(0)} GFLOP, ${s.algos.length} candidates; sustained ${s.longMs.toFixed(0)} ms a candidate × 2 rounds)`);
    console.log(`   #  burst ms  sustained  tuning-mode  TFLOP/s sust.  algo`);
    s.algos.forEach((desc, i) => {
      const marks = `${i === b ? 'B' : ' '}${i === l ? 'S' : ' '}${i === t ? 'T' : ' '}`;
      const tflops = Number.isFinite(s.sustained[i]) ? (s.flops / s.sustained[i] / 1e9).toFixed(0) : '';
      console.log(`  ${String(i).padStart(2)} ${f(s.burst[i]).padStart(9)} ${f(s.sustained[i]).padStart(10)} ${f(s.tuning[i]).padStart(12)} ${tflops.padStart(14)}  ${marks} ${desc}`);
    });
    today += perStep * s.sustained[b];
    best += perStep * s.sustained[l];
    tuned += perStep * s.sustained[t];
    todayBurst += perStep * s.burst[b];
    if (l !== b || t !== b) changed.push(`  ${s.what}: today #${b}, sustained-best #${l}, tuning mode #${t}; ${(perStep * (s.sustained[b] - s.sustained[t])).toFixed(3)} ms a step (sustained ms, tuning mode's against today's)`);
  }
  console.log(`\nB: today's choice (burst timing, first 16 candidates), S: the sustained-best, T: what the sustained tuning mode picks`);
  console.log(`one step's tuned GEMMs (calls × sustained ms): today's choices ${today.toFixed(2)} ms, sustained-best ${best.toFixed(2)} ms (${(best - today).toFixed(2)}), tuning mode's ${tuned.toFixed(2)} ms (${(tuned - today).toFixed(2)}); today's at burst timing ${todayBurst.toFixed(2)} ms`);
  console.log(changed.length ? `shapes whose choice changes:\n${changed.join('\n')}` : 'no shape changes its choice');
  console.log(`tuning's own burst choices in this process: ${tuningLog.map((x) => `#${x.chosen}`).join(' ')}`);
}
