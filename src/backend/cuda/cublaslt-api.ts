/**
 * The cuBLASLt bindings both GEMM front ends share (cublaslt.ts for the forward's y = x·Wᵀ,
 * training-gemm.ts for the backward's general GEMMs): the library's functions, status checks that
 * name the call and the status, the enums we use, and one handle with its workspace that picks an
 * algorithm per shape and launches matmuls.
 */
import { UserError } from '../../util/errors.js';
import { loadLibrary } from './libraries.js';
import { cu, CudaEvent, type CudaContext } from './driver.js';
import { GemmChoices, gemmChoicesFile } from './gemm-choices.js';
import { CandidateRotation } from './gemm-rotation.js';
import { median } from '../../util/median.js';

const STATUS: Record<number, string> = {
  0: 'CUBLAS_STATUS_SUCCESS', 1: 'CUBLAS_STATUS_NOT_INITIALIZED', 3: 'CUBLAS_STATUS_ALLOC_FAILED',
  7: 'CUBLAS_STATUS_INVALID_VALUE', 8: 'CUBLAS_STATUS_ARCH_MISMATCH', 11: 'CUBLAS_STATUS_MAPPING_ERROR',
  13: 'CUBLAS_STATUS_EXECUTION_FAILED', 14: 'CUBLAS_STATUS_INTERNAL_ERROR', 15: 'CUBLAS_STATUS_NOT_SUPPORTED',
  16: 'CUBLAS_STATUS_LICENSE_ERROR',
};

export class CublasError extends Error {
  constructor(readonly call: string, readonly status: number, meaning: string) {
    super(`${call} failed: ${meaning} (cublasStatus ${status})`);
    this.name = 'CublasError';
  }
}

type Fn = (...args: any[]) => any;
let fns: Record<string, Fn> | null = null;

export function lt(): Record<string, Fn> {
  if (fns) return fns;
  const lib = loadLibrary('libcublasLt', ['libcublasLt.so', 'libcublasLt.so.13', 'libcublasLt.so.12']);
  fns = {};
  for (const proto of [
    'int cublasLtCreate(void *handle)',
    'size_t cublasLtGetVersion()',
    'int cublasLtMatmulDescCreate(void *desc, int computeType, int scaleType)',
    'int cublasLtMatmulDescSetAttribute(uint64_t desc, int attr, void *buf, size_t size)',
    'int cublasLtMatrixLayoutCreate(void *layout, int type, uint64_t rows, uint64_t cols, int64_t ld)',
    'int cublasLtMatrixLayoutSetAttribute(uint64_t layout, int attr, void *buf, size_t size)',
    'int cublasLtMatrixLayoutGetAttribute(uint64_t layout, int attr, void *buf, size_t size, _Out_ size_t *written)',
    'int cublasLtMatmulPreferenceCreate(void *pref)',
    'int cublasLtMatmulPreferenceSetAttribute(uint64_t pref, int attr, void *buf, size_t size)',
    'int cublasLtMatmulAlgoGetHeuristic(uint64_t handle, uint64_t op, uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t pref, int count, void *results, _Out_ int *returned)',
    'int cublasLtMatmul(uint64_t handle, uint64_t op, void *alpha, uint64_t A, uint64_t Adesc, uint64_t B, uint64_t Bdesc, void *beta, uint64_t C, uint64_t Cdesc, uint64_t D, uint64_t Ddesc, void *algo, uint64_t workspace, size_t workspaceSize, uint64_t stream)',
  ]) {
    const f = lib.func(proto);
    fns[f.info.name] = f;
  }
  try {
    fns.statusString = lib.func('const char *cublasLtGetStatusString(int status)');
  } catch {
    // older cuBLASLt: our own table
  }
  try {
    fns.algoConfigGet = lib.func('int cublasLtMatmulAlgoConfigGetAttribute(void *algo, int attr, void *buf, size_t size, _Out_ size_t *written)');
  } catch {
    // only describeAlgo reads it
  }
  return fns;
}

export function check(call: string, status: number): void {
  if (status === 0) return;
  let meaning = STATUS[status] ?? 'unknown status';
  try {
    const text = lt().statusString?.(status) as string | undefined;
    if (text && !meaning.includes(text)) meaning = `${meaning}: ${text}`;
  } catch { /* keep the table's name */ }
  throw new CublasError(call, status, meaning);
}

const out = new BigUint64Array(1);
/** Call a cuBLASLt create function that writes a handle through its first argument. */
export function create(call: string, ...args: unknown[]): number {
  out[0] = 0n;
  check(call, lt()[call](out, ...args));
  return Number(out[0]);
}

export const int32 = (v: number) => { const b = Buffer.alloc(4); b.writeInt32LE(v); return b; };
/** A signed 64-bit attribute value (strides, offsets), as cuBLASLt's int64_t attributes take it. */
export const int64 = (v: number) => { const b = Buffer.alloc(8); b.writeBigInt64LE(BigInt(v)); return b; };

// cublasLt enums (cublasLt.h, cublas_api.h, library_types.h)
export const CUDA_R_32F = 0, CUDA_R_16BF = 14;
export const CUBLAS_COMPUTE_32F = 68;
export const CUBLAS_OP_N = 0, CUBLAS_OP_T = 1;
export const DESC_TRANSA = 3, DESC_TRANSB = 4, DESC_EPILOGUE = 7, DESC_BIAS_POINTER = 8;
export const EPILOGUE_DEFAULT = 1, EPILOGUE_BIAS = 4;
const PREF_MAX_WORKSPACE_BYTES = 1;
const HEURISTIC_RESULT_BYTES = 96; // sizeof(cublasLtMatmulHeuristicResult_t); the algo is its first 64 bytes

/** A matmul descriptor with fp32 compute and scale, its transposes set. */
export function matmulDesc(transA: boolean, transB: boolean): number {
  const desc = create('cublasLtMatmulDescCreate', CUBLAS_COMPUTE_32F, CUDA_R_32F);
  setAttribute(desc, DESC_TRANSA, int32(transA ? CUBLAS_OP_T : CUBLAS_OP_N), 'TRANSA');
  setAttribute(desc, DESC_TRANSB, int32(transB ? CUBLAS_OP_T : CUBLAS_OP_N), 'TRANSB');
  return desc;
}

export function setAttribute(desc: number, attr: number, buf: Buffer, what: string): void {
  check(`cublasLtMatmulDescSetAttribute(${what})`, lt().cublasLtMatmulDescSetAttribute(desc, attr, buf, buf.length));
}

// cublasLtMatrixLayoutAttribute_t
const LAYOUT_TYPE = 0, LAYOUT_BATCH_COUNT = 5, LAYOUT_STRIDED_BATCH_OFFSET = 6;

/** A layout's element type (cudaDataType: CUDA_R_16BF, CUDA_R_32F …). */
function layoutType(layout: number): number {
  const buf = Buffer.alloc(4), written = [0];
  check('cublasLtMatrixLayoutGetAttribute(TYPE)', lt().cublasLtMatrixLayoutGetAttribute(layout, LAYOUT_TYPE, buf, 4, written));
  return buf.readInt32LE(0);
}

/**
 * A matrix layout that stands for `count` matrices `stride` elements apart (strided batch; stride 0: the
 * same matrix for every member of the batch).
 */
export function setLayoutBatch(layout: number, count: number, stride: number): void {
  check('cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)', lt().cublasLtMatrixLayoutSetAttribute(layout, LAYOUT_BATCH_COUNT, int32(count), 4));
  check('cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)', lt().cublasLtMatrixLayoutSetAttribute(layout, LAYOUT_STRIDED_BATCH_OFFSET, int64(stride), 8));
}

/** Which cuBLASLt handles tune in the step: none, those made for training (LtHandle's `role`), or all. */
export type InStepScope = 'off' | 'training' | 'all';

/** $MPT_GEMM_TUNE_IN_STEP: unset or training the training step's handle only (the default), 0 off, 1 or all every handle. */
export function inStepFromEnv(v: string | undefined): InStepScope {
  if (v === undefined || v === '' || v === 'training') return 'training';
  if (v === '0') return 'off';
  if (v === '1' || v === 'all') return 'all';
  throw new UserError(`MPT_GEMM_TUNE_IN_STEP: '${v}' is not one of 0, 1, all, training`);
}

/**
 * Choosing among the heuristic's algorithms by timing them (GemmTuning). The heuristic's first pick is
 * not always the fastest for our shapes (H100, 2026-11-27: the accumulating dx GEMM NN 16384×2048×2048
 * ran at ~660 TFLOP/s against ~720 for x·Wᵀ of the same size), so a GEMM of at least `minFlops` times
 * up to `candidates` of them once, on the first call with its shape, and keeps the fastest for the
 * process. The heuristic's first stays unless another is faster by more than `margin`: a near tie
 * must not flip the choice (and with it the low bits of the results) between runs. MPT_GEMM_TUNE=0
 * switches this off (the heuristic's first everywhere, as before).
 *
 * `sustained` (MPT_GEMM_TUNE_SUSTAINED=1; for the training step's bf16 GEMMs only with MPT_GEMM_TUNE_IN_STEP=0,
 * as in-step tuning takes those) times the candidates as the training step runs them: the
 * card brought to its power cap first, each candidate back to back for `sustainedMs` with L2 flushed
 * before every launch, the candidates interleaved over `rounds` rounds, the median launch kept. A
 * burst of 3 launches on a cool card runs at the full clock with the inputs in L2; in the step the
 * card sits at its power cap at a lower clock, where the ranking may differ (bench/tools/gemm-power.ts).
 * Off by default: on the H200 (2026-11-28) it changed 6 of the step's 16 choices, chose the same in both
 * processes (burst: 2 of 16 differed), and moved the step by −1 to −2 ms, within the steps' spread, for
 * 7.2 s of tuning instead of 0.6 (bench/RESULTS-cuda-train.md).
 *
 * `inStep` (MPT_GEMM_TUNE_IN_STEP=1 or =all: every handle; =training: only the training step's own GEMM
 * front end, training-gemm.ts, whose shapes inference never calls) times no trials at all: the shape's
 * real calls run its candidates in rotation (call n takes the n-th, gemm-rotation.ts) with events around each, and once every
 * candidate has `inStepSamples` completed calls (after one uncounted call each) the medians decide
 * (pickFastest) and the choice is fixed and stored. A call runs exactly once whichever algorithm
 * computes it, so an accumulating GEMM adds once with no scratch; only the low bits of the results
 * differ between candidates. The host learns that the events are complete by a non-blocking query at
 * the shape's next call (the step never waits for the device). A shape called rarely explores longer (the
 * logits' 4 calls a step: 12 steps for 8 candidates); the choice waits for every candidate's samples, never
 * for a clock: a wall-clock deadline (3 s from the first call, until the ninth session) expired inside a
 * first step that compiled its kernels (7.9 s on a machine without the kernel cache) and fixed 15 of 16
 * shapes on the heuristic's first from a few samples, ~4 ms a step slower (bench/RESULTS-cuda-train.md).
 * Only GEMMs of bf16 operands explore in the step; float32 ones (reference and checking runs, ~10×
 * slower a call) keep the burst, and a graph capture takes the heuristic's first without exploring.
 * On by default for the training step's handle ('training'; MPT_GEMM_TUNE_IN_STEP=0 for the burst): on the
 * H200 (2026-11-28) the two in-step processes of the eighth session's A/B chose alike, it found the QKV
 * shape's faster algorithm (−1.2 ms a step) with no trial launches, and its step was faster than the
 * burst's in all four A/B pairs of two calls (−0.6 to −2.5 ms, −1.3 on average; bench/RESULTS-cuda-train.md).
 * Its cost: the first steps of a run explore (the logits' shapes ~12 steps); later processes on the
 * machine take the stored choices.
 */
export const gemmTuning = {
  enabled: process.env.MPT_GEMM_TUNE !== '0',
  minFlops: 2 ** 33,
  candidates: 16,
  margin: 0.03,
  /** Timed launches a candidate, after one untimed (the burst timing). */
  reps: 3,
  /** Take (and keep) choices stored on disk by earlier processes (gemm-choices.ts); off: time every shape anew. */
  stored: true,
  /** Time the candidates sustained (at the power cap, L2 cold) instead of in a burst. */
  sustained: process.env.MPT_GEMM_TUNE_SUSTAINED === '1',
  /** Sustained timing: ms each candidate runs back to back in each round, and the rounds. */
  sustainedMs: 20,
  rounds: 2,
  /** Sustained timing: ms of the heuristic's first back to back before the trials (`firstHeatMs` when the card has been idle). */
  heatMs: 30,
  firstHeatMs: 300,
  /** Time the candidates in place in the real calls (see above) instead of by trial launches. */
  inStep: inStepFromEnv(process.env.MPT_GEMM_TUNE_IN_STEP),
  /** In-step: counted calls a candidate needs before the choice. */
  inStepSamples: 5,
  /** Bench tools: called with every shape about to be tuned, before the tuning's own timing (gemm-power.ts). */
  observe: null as ((trial: TuningTrial) => void) | null,
};

/** One shape about to be tuned, for gemmTuning.observe: its candidates and the two ways of timing them (ms a launch). */
export interface TuningTrial {
  key: string;
  what: string;
  flops: number;
  algos: Buffer[];
  burst(): number[];
  sustained(options?: Partial<SustainedOptions>): number[];
}

export interface SustainedOptions { ms: number; rounds: number; heatMs: number; flushL2: boolean }

/**
 * The choice rule: the fastest of `ms` (a time a candidate, the heuristic's first at 0), unless it is
 * not faster than the first by more than `margin` (a fraction): then the first. Infinity marks a
 * candidate that failed; a failed first is beaten by any finite time.
 */
export function pickFastest(ms: number[], margin: number): number {
  let best = 0;
  ms.forEach((t, i) => { if (t < ms[best]) best = i; });
  return ms[best] < ms[0] * (1 - margin) ? best : 0;
}

/** What one shape's tuning found (for the benchmark's report). */
export interface TuningRecord {
  what: string; candidates: number; chosen: number; firstMs: number; bestMs: number;
  /** How the candidates were timed, and the wall time the tuning took (in-step: from the shape's first call to its choice). */
  timing?: 'burst' | 'sustained' | 'in-step'; tuningMs?: number;
  /** In-step: the real calls that explored, and the chosen candidate's counted samples. */
  calls?: number; samples?: number;
}

/**
 * One shape exploring in the step: its candidates, their rotation, and the event pairs recorded around
 * calls (in stream order) whose times have not been read yet. The front ends hold `placeholder` as the
 * shape's algorithm; LtHandle.matmul recognizes it, and the choice is finally written into its bytes,
 * so the front ends' kept algorithm becomes the chosen one without their knowing.
 */
interface Exploration {
  key: string; what: string; ctx: CudaContext; algos: Buffer[]; rotation: CandidateRotation; started: number;
  pending: Array<{ candidate: number; start: CudaEvent; end: CudaEvent }>;
  free: CudaEvent[];
}
const explorations = new Map<Buffer, Exploration>();

/** Shapes still exploring in the step (gemmTuning.inStep), for bench tools and tests. */
export function inStepExploring(): string[] {
  return [...explorations.values()].map((x) => x.what);
}

/** Algorithms chosen so far in this process, by shape key (front end, types, transposes, sizes, epilogue). */
const chosenAlgorithms = new Map<string, Buffer>();
/** Tuned choices on disk, per device name and cuBLASLt version (opened on the first tuned shape). */
let storedChoices: GemmChoices | null = null;
export const tuningLog: TuningRecord[] = [];
/** Bytes written before each sustained launch to push its inputs out of L2 (the H200's is 60 MB, the H100's 50 MB). */
const L2_FLUSH_BYTES = 128 << 20;
/** When the last sustained timing ended (performance.now()): a card idle for longer than a second is heated with firstHeatMs. */
let lastSustainedEnd = -Infinity;

// cublasLtMatmulAlgoConfigAttributes_t, and each one's size in bytes
const ALGO_CONFIG: Array<[string, number, number]> = [
  ['id', 0, 4], ['tile', 1, 4], ['splitK', 2, 4], ['reduction', 3, 4], ['swizzle', 4, 4], ['custom', 5, 4], ['stages', 6, 4], ['inner', 7, 2], ['cluster', 8, 2],
];

/** An algorithm's configuration ids (algo id, tile, split-k, stages, cluster shape …, cublasLt.h's enums) as `name=value` words; '' when unreadable. */
export function describeAlgo(algo: Buffer): string {
  try {
    const f = lt().algoConfigGet;
    if (!f) return '';
    return ALGO_CONFIG.map(([name, attr, size]) => {
      const buf = Buffer.alloc(8), written = [0];
      if (f(algo, attr, buf, size, written) !== 0) return `${name}=?`;
      return `${name}=${size === 2 ? buf.readUInt16LE(0) : buf.readInt32LE(0)}`;
    }).filter((w) => !/=0$/.test(w) || w.startsWith('id=')).join(' ');
  } catch {
    return '';
  }
}

/** One cuBLASLt handle on a stream, with its workspace and a preference capped to it. */
export class LtHandle {
  private readonly handle: number;
  private readonly pref: number;
  private readonly workspace: number;

  /** `role`: 'training' for the training step's GEMM front end (gemmTuning.inStep 'training' tunes only its shapes in the step). */
  constructor(private readonly ctx: CudaContext, private readonly workspaceBytes = 32 << 20, readonly role: 'training' | 'inference' = 'inference') {
    this.handle = create('cublasLtCreate');
    this.pref = create('cublasLtMatmulPreferenceCreate');
    const ws = Buffer.alloc(8);
    ws.writeBigUInt64LE(BigInt(workspaceBytes));
    check('cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)',
      lt().cublasLtMatmulPreferenceSetAttribute(this.pref, PREF_MAX_WORKSPACE_BYTES, ws, 8));
    const p = new BigUint64Array(1);
    cu('cuMemAlloc_v2', p, workspaceBytes);
    this.workspace = Number(p[0]);
  }

  /** Up to `count` algorithms the heuristic offers for D = op(A)·op(B) (+ C), best first (C and D share a layout). */
  candidates(desc: number, a: number, b: number, c: number, what: string, count = 1): Buffer[] {
    const results = Buffer.alloc(HEURISTIC_RESULT_BYTES * count);
    const returned = [0];
    check(`cublasLtMatmulAlgoGetHeuristic(${what})`,
      lt().cublasLtMatmulAlgoGetHeuristic(this.handle, desc, a, b, c, c, this.pref, count, results, returned));
    const algos: Buffer[] = [];
    for (let i = 0; i < returned[0]; i++) {
      const r = results.subarray(i * HEURISTIC_RESULT_BYTES, (i + 1) * HEURISTIC_RESULT_BYTES);
      if (r.readInt32LE(72) === 0) algos.push(Buffer.from(r.subarray(0, 64))); // state (after algo and workspaceSize): success
    }
    if (algos.length < 1) throw new CublasError(`cublasLtMatmulAlgoGetHeuristic(${what})`, 15, 'no algorithm for this shape');
    return algos;
  }

  /** The heuristic's best algorithm. */
  algorithm(desc: number, a: number, b: number, c: number, what: string): Buffer {
    return this.candidates(desc, a, b, c, what)[0];
  }

  /** Whether this handle's shapes explore in the step (gemmTuning.inStep and the handle's role). */
  private tunesInStep(): boolean {
    return gemmTuning.inStep === 'all' || (gemmTuning.inStep === 'training' && this.role === 'training');
  }

  /**
   * The algorithm for one shape: the process's earlier choice for `key`, else (a GEMM of at least
   * gemmTuning.minFlops, tuning on, not inside a graph capture) the choice stored on disk by an earlier
   * process (gemm-choices.ts) or, failing that, the fastest of the heuristic's candidates (pickFastest,
   * timed in a burst or sustained: gemmTuning), else its first. `launch(algo, d)` runs the GEMM on the
   * real inputs with that algorithm, writing D at `d` (its own output when `d` is undefined). A GEMM
   * whose output is also its C (accumulating) must not run more than once into it: give
   * `scratchBytes`, the output's size, and the trials write scratch.
   */
  choose(key: string, flops: number, desc: number, a: number, b: number, c: number, what: string,
    launch: (algo: Buffer, d?: number) => void, scratchBytes = 0): Buffer {
    const known = chosenAlgorithms.get(key);
    if (known) return known;
    const tune = gemmTuning.enabled && flops >= gemmTuning.minFlops && !this.ctx.capturing;
    const algos = this.candidates(desc, a, b, c, what, tune ? gemmTuning.candidates : 1);
    let algo = algos[0];
    if (tune) {
      storedChoices ??= new GemmChoices(gemmChoicesFile(this.ctx.device.name, Number(lt().cublasLtGetVersion())));
      // An earlier process's choice, if the heuristic still offers it: the same algorithm in every run.
      const stored = gemmTuning.stored ? storedChoices.get(key) : undefined;
      const offered = stored && algos.find((candidate) => candidate.equals(stored));
      if (offered) algo = offered;
      else if (this.tunesInStep() && algos.length > 1 && layoutType(a) === CUDA_R_16BF) {
        // Explored by the real calls (LtHandle.matmul); the heuristic's first until the choice.
        algo = Buffer.from(algos[0]);
        explorations.set(algo, {
          key, what, ctx: this.ctx, algos, rotation: new CandidateRotation(algos.length), started: performance.now(), pending: [], free: [],
        });
      } else { // timed even when the heuristic offers one: the trials run the path the real call takes
        const started = performance.now(), timing = gemmTuning.sustained ? 'sustained' : 'burst';
        const times = this.withScratch(scratchBytes, (d) => {
          const trial: TuningTrial = {
            key, what, flops, algos,
            burst: () => this.timeBurst(algos, launch, d),
            sustained: (o = {}) => this.timeSustained(algos, launch, d, {
              ms: gemmTuning.sustainedMs, rounds: gemmTuning.rounds, heatMs: gemmTuning.heatMs, flushL2: true, ...o,
            }),
          };
          gemmTuning.observe?.(trial);
          return timing === 'sustained' ? trial.sustained() : trial.burst();
        });
        const best = pickFastest(times, gemmTuning.margin);
        algo = algos[best];
        tuningLog.push({ what, candidates: algos.length, chosen: best, firstMs: times[0], bestMs: times[best], timing, tuningMs: performance.now() - started });
        storedChoices.set(key, algo);
      }
    }
    chosenAlgorithms.set(key, algo);
    return algo;
  }

  /** `fn` given scratch of `bytes` for the trials' output (undefined: none; trials write the real output), freed after. */
  private withScratch<T>(bytes: number, fn: (d: number | undefined) => T): T {
    const p = new BigUint64Array(1);
    if (bytes > 0) cu('cuMemAlloc_v2', p, bytes);
    const d = bytes > 0 ? Number(p[0]) : undefined;
    try {
      return fn(d);
    } finally {
      if (d !== undefined) {
        this.ctx.synchronize();
        cu('cuMemFree_v2', d);
      }
    }
  }

  /** Milliseconds a launch with each algorithm takes (mean of gemmTuning.reps after one warm-up); Infinity where it fails. */
  private timeBurst(algos: Buffer[], launch: (algo: Buffer, d?: number) => void, d: number | undefined): number[] {
    const start = new CudaEvent(this.ctx), end = new CudaEvent(this.ctx);
    try {
      return algos.map((algo) => {
        try {
          launch(algo, d);
          start.record();
          for (let i = 0; i < gemmTuning.reps; i++) launch(algo, d);
          end.record();
          return end.since(start) / gemmTuning.reps;
        } catch (e) {
          if (e instanceof CublasError) return Infinity; // a candidate this launch refuses: not a choice
          throw e;
        }
      });
    } finally {
      start.destroy();
      end.destroy();
    }
  }

  /**
   * Median milliseconds a launch with each algorithm takes as the step runs it: the card first at its
   * power cap (o.heatMs of the first working candidate back to back; gemmTuning.firstHeatMs after a
   * second without sustained timing), then each candidate back to back for o.ms, events around each
   * launch alone and (flushL2) L2 flushed before it, the candidates interleaved (each round starts one
   * further on) for o.rounds rounds. Infinity where a candidate fails (found by a burst, which also
   * sizes the runs).
   */
  private timeSustained(algos: Buffer[], launch: (algo: Buffer, d?: number) => void, d: number | undefined, o: SustainedOptions): number[] {
    const burst = this.timeBurst(algos, launch, d);
    const first = burst.findIndex((t) => Number.isFinite(t));
    if (first < 0) return burst;
    const runs = burst.map((t) => (Number.isFinite(t) ? Math.max(3, Math.round(o.ms / Math.max(t, 1e-3))) : 0));
    const events: CudaEvent[] = [];
    for (let i = 0; i < 2 * Math.max(...runs); i++) events.push(new CudaEvent(this.ctx));
    const p = new BigUint64Array(1);
    if (o.flushL2) cu('cuMemAlloc_v2', p, L2_FLUSH_BYTES);
    const flush = Number(p[0]);
    const samples = algos.map(() => [] as number[]);
    try {
      const heatMs = performance.now() - lastSustainedEnd > 1000 ? Math.max(o.heatMs, gemmTuning.firstHeatMs) : o.heatMs;
      for (let i = 0; i < Math.ceil(heatMs / Math.max(burst[first], 1e-3)); i++) launch(algos[first], d);
      for (let round = 0; round < o.rounds; round++) {
        for (let j = 0; j < algos.length; j++) {
          const i = (j + round) % algos.length;
          for (let k = 0; k < runs[i]; k++) {
            if (o.flushL2) cu('cuMemsetD32Async', flush, k, L2_FLUSH_BYTES / 4, this.ctx.stream);
            events[2 * k].record();
            launch(algos[i], d);
            events[2 * k + 1].record();
          }
          for (let k = 0; k < runs[i]; k++) samples[i].push(events[2 * k + 1].since(events[2 * k]));
        }
      }
    } finally {
      lastSustainedEnd = performance.now();
      for (const e of events) e.destroy();
      if (o.flushL2) {
        this.ctx.synchronize();
        cu('cuMemFree_v2', flush);
      }
    }
    return samples.map((xs) => (xs.length > 0 ? median(xs) : Infinity));
  }

  /**
   * D = alpha·op(A)·op(B) + beta·C on the context's stream; D is C (in place) unless given. C and D
   * share one layout: a separate D saves copying C into the output first.
   */
  matmul(what: string, desc: number, algo: Buffer, alpha: Float32Array, A: number, aLayout: number, B: number, bLayout: number,
    beta: Float32Array, C: number, cLayout: number, D = C): void {
    const run = (chosen: Buffer) => check(`cublasLtMatmul(${what})`, lt().cublasLtMatmul(this.handle, desc, alpha, A, aLayout, B, bLayout,
      beta, C, cLayout, D, cLayout, chosen, this.workspace, this.workspaceBytes, this.ctx.stream));
    const x = explorations.get(algo);
    // Never inside a capture (the graph would replay one candidate forever) nor on another context's stream.
    if (!x || this.ctx.capturing || x.ctx !== this.ctx) return run(algo);
    this.explore(x, algo, run);
  }

  /** One real call of an exploring shape with the rotation's next candidate, timed by events; then a look at the finished ones. */
  private explore(x: Exploration, placeholder: Buffer, run: (algo: Buffer) => void): void {
    for (;;) {
      const candidate = x.rotation.next();
      const start = x.free.pop() ?? new CudaEvent(this.ctx), end = x.free.pop() ?? new CudaEvent(this.ctx);
      start.record();
      try {
        run(x.algos[candidate]);
      } catch (e) {
        x.free.push(start, end);
        // A candidate this call refuses leaves the rotation; the call runs with the next one (it ran no launch).
        if (e instanceof CublasError && x.rotation.drop(candidate)) continue;
        throw e;
      }
      end.record();
      x.pending.push({ candidate, start, end });
      break;
    }
    this.collect(x, placeholder);
  }

  /** Read the times of the calls that have completed (stream order: stop at the first that has not); choose when enough are in. */
  private collect(x: Exploration, placeholder: Buffer): void {
    while (x.pending.length > 0 && x.pending[0].end.done()) {
      const p = x.pending.shift()!;
      x.rotation.add(p.candidate, p.end.since(p.start));
      x.free.push(p.start, p.end);
    }
    if (!x.rotation.complete(gemmTuning.inStepSamples)) return;
    const now = performance.now();
    const times = x.rotation.times(), best = pickFastest(times, gemmTuning.margin);
    x.algos[best].copy(placeholder); // the front ends' kept algorithm is now the choice
    explorations.delete(placeholder);
    for (const e of [...x.free, ...x.pending.flatMap((p) => [p.start, p.end])]) e.destroy(); // a pending one is released once it completes
    storedChoices?.set(x.key, x.algos[best]);
    tuningLog.push({
      what: x.what, candidates: x.algos.length, chosen: best, firstMs: times[0], bestMs: times[best], timing: 'in-step',
      tuningMs: now - x.started, calls: x.rotation.callsMade, samples: x.rotation.samplesOf(best),
    });
  }
}
