import { trainingBackend, type Backend, type Tensor } from '../backend/backend.js';
import { openModelFolder } from '../io/model-folder.js';
import { lossAndGradients } from '../model/backward.js';
import { parameterCount, parameterShapes, trainingFlopsPerSequence, type MptConfig } from '../model/config.js';
import { loadModel } from '../model/load.js';
import { paramsByName } from '../model/param-map.js';
import { structureParams } from '../model/params.js';
import { TrainingGraph } from '../model/training-forward.js';
import { float32ToBfloat16Array } from '../util/dtype.js';
import { ConfigError } from '../util/errors.js';
import { formatBytes, Progress } from '../util/progress.js';
import type { BatchSource } from './batches.js';
import { CheckpointReader, latestCheckpoint, pruneCheckpoints, resolveCheckpoint, saveCheckpoint } from './checkpoint.js';
import { initialWeights, type InitSettings } from './init.js';
import { formatEvalLine, formatTrainLine, MetricsLog, type EvalRecord, type TrainRecord } from './metrics.js';
import { AdamW, type OptimizerSettings } from './optimizer.js';
import { lrFactor, type Schedule } from './schedule.js';
import { TrainStep } from './step.js';

/** Everything a run needs, resolved from the YAML (src/train/config.ts): counts are in batches. */
export interface RunSettings {
  model: MptConfig;
  init: InitSettings;
  /** A model folder or hub name to start from instead of a fresh init. */
  pretrained: string | null;
  seqLen: number;
  globalBatch: number;
  microbatch: number;
  maxBatches: number;
  schedule: Schedule;
  optimizer: OptimizerSettings;
  clipNorm: number | null;
  precision: 'fp32' | 'amp_bf16';
  seed: number;
  evalInterval: number | null;
  evalBatchSize: number;
  evalBatches: number | null;
  logInterval: number;
  saveFolder: string | null;
  saveInterval: number | null;
  keepCheckpoints: number;
  loadPath: string | null;
  autoresume: boolean;
  /** Where metrics.jsonl and loss.svg go (the save folder, or the working folder without one). */
  metricsFolder: string;
  /** Kept in every checkpoint for `mpt export`: the tokenizer, the config's on-disk format. */
  run: Record<string, unknown>;
}

export interface TrainOptions {
  backend: Backend;
  /** A console line (train, eval, notices); default: stdout. */
  log?: (line: string) => void;
  /** Stop after this many batches in total, as a killed run would (tests of resume). */
  stopAtStep?: number;
  /** The device's peak FLOP/s for MFU; null: not shown. */
  peakFlops?: number | null;
  /** Progress bars on stderr for the long set-up work (a fresh init, loading pretrained weights): the CLI's. */
  progress?: boolean;
}

export interface TrainResult {
  startStep: number;
  endStep: number;
  /** The loss of every step this call ran. */
  losses: Array<{ step: number; loss: number }>;
  evals: EvalRecord[];
}

/** Model FLOPs per token, as llm-foundry counts them: 6·N + the attention term 6·n_layers·d·seqLen. */
/** Training FLOPs per token at this sequence length, as llm-foundry counts them for MFU. */
export function flopsPerToken(config: MptConfig, seqLen: number): number {
  return trainingFlopsPerSequence(config, seqLen) / seqLen;
}

export async function train(s: RunSettings, source: BatchSource, options: TrainOptions): Promise<TrainResult> {
  const log = options.log ?? ((line: string) => process.stdout.write(line + '\n'));
  const be = trainingBackend(options.backend);
  const accumulation = s.globalBatch / s.microbatch;
  if (!Number.isInteger(accumulation) || accumulation < 1) {
    throw new ConfigError(`global_train_batch_size ${s.globalBatch} is not a multiple of device_train_microbatch_size ${s.microbatch}`);
  }
  if (source.seqLen !== s.seqLen) throw new ConfigError(`the data has samples of ${source.seqLen} tokens but the run asks for max_seq_len ${s.seqLen}`);
  for (const n of source.notices) log(`note: ${n}`);

  // Start: autoresume's newest checkpoint, else load_path, else pretrained weights or a fresh init.
  const shapes = parameterShapes(s.model);
  const resumeFrom = (s.autoresume && s.saveFolder ? latestCheckpoint(s.saveFolder) : null) ?? (s.loadPath ? resolveCheckpoint(s.loadPath) : null);
  // The compute copies (amp_bf16) are made beside the masters from the same host values where the start
  // has them there (a fresh init, a checkpoint read tensor by tensor), else downloaded (pretrained weights).
  const masters = new Map<string, Tensor>();
  const copies = s.precision === 'amp_bf16' ? new Map<string, Tensor>() : null;
  const place = (name: string, shape: number[], values: Float32Array) => {
    masters.set(name, be.upload(values, shape, 'float32'));
    copies?.set(name, be.upload(float32ToBfloat16Array(values), shape, 'bfloat16'));
  };
  let startStep = 0, tokens = 0, optimizerStep = 0;
  let checkpoint: CheckpointReader | null = null;
  let graph: TrainingGraph, optimizer: AdamW;
  try {
    if (resumeFrom) {
      checkpoint = await CheckpointReader.open(resumeFrom);
      for (const [name, shape] of shapes) place(name, shape, checkLength(await checkpoint.read('params', name), shape, name, resumeFrom));
      const state = checkpoint.state;
      startStep = state.step;
      tokens = state.tokens;
      optimizerStep = state.optimizerStep;
      if (state.seed !== s.seed) log(`note: the checkpoint was trained with seed ${state.seed}, this run says ${s.seed}; the data order follows the run's seed`);
      log(`resuming from ${resumeFrom} at step ${startStep}`);
    } else if (s.pretrained) {
      const folder = await openModelFolder(s.pretrained);
      const model = await loadModel(folder, be, { dtype: 'float32', progress: options.progress ?? false });
      await folder.close();
      for (const [name, t] of paramsByName(model.config, model.params)) {
        masters.set(name, t);
        copies?.set(name, be.upload(float32ToBfloat16Array(be.download(t) as Float32Array), t.shape, 'bfloat16'));
      }
      log(`starting from pretrained weights ${s.pretrained}`);
    } else {
      const bar = options.progress ? new Progress({ label: `initializing (${s.init.paramInitFn}, seed ${s.seed})`, total: parameterCount(s.model), unit: 'values' }) : null;
      const init = await initialWeights(s.model, s.init, s.seed, { progress: (n) => bar?.tick(n) });
      bar?.finish();
      for (const [name, shape] of shapes) place(name, shape, init.get(name)!);
    }
    graph = new TrainingGraph(s.model, be, structureParams(s.model, copies ?? masters));
    optimizer = new AdamW(be, s.optimizer, masters, copies);
    if (checkpoint) {
      // The moments, a tensor at a time; each upload is released once added in (10.5 GB for a 1.3B model).
      for (const group of ['m', 'v'] as const) {
        for (const [name, t] of optimizer[group]) {
          const values = checkLength(await checkpoint.read(group, name), t.shape, `${group}.${name}`, resumeFrom!);
          be.scope(() => { be.addInto(t, be.upload(values, t.shape, 'float32'), 1); });
        }
      }
      optimizer.step = optimizerStep;
    }
  } finally {
    await checkpoint?.close();
  }

  const metrics = new MetricsLog(s.metricsFolder, startStep);
  const tokensPerBatch = s.globalBatch * s.seqLen;
  const flops = flopsPerToken(s.model, s.seqLen);
  const result: TrainResult = { startStep, endStep: startStep, losses: [], evals: [] };
  const save = async (step: number) => {
    if (!s.saveFolder) return;
    // Each tensor is downloaded when the writer reaches it: one tensor on the host at a time.
    const download = (map: Map<string, Tensor>) => new Map([...map].map(([n, t]) => [n, () => be.download(t) as Float32Array]));
    const started = performance.now();
    const saved = await saveCheckpoint(s.saveFolder, {
      step, tokens, optimizerStep: optimizer.step, dataStep: step, seed: s.seed, run: { ...s.run, config: s.model },
    }, { params: download(masters), m: download(optimizer.m), v: download(optimizer.v) }, shapes);
    pruneCheckpoints(s.saveFolder, s.keepCheckpoints);
    log(`saved ${saved.dir} (${formatBytes(saved.bytes)} in ${((performance.now() - started) / 1000).toFixed(1)} s)`);
  };
  const evalBatches = source.validation ? source.validation.batches(s.evalBatchSize) : 0;
  if (s.evalInterval && evalBatches === 0) {
    log(`notice: no evaluation: the data has no validation batch of ${s.evalBatchSize} samples (prepare with a larger --val-fraction, or lower device_eval_batch_size)`);
  }
  const evaluate = (step: number) => {
    if (!source.validation) return;
    const n = Math.min(evalBatches, s.evalBatches ?? evalBatches);
    if (n === 0) return;
    let sum = 0, count = 0;
    for (let i = 0; i < n; i++) {
      const b = source.validation.batch(i, s.evalBatchSize);
      const r = be.scope(() => lossAndGradients(graph, b.tokens, b.rows, null, 1)); // device tensors freed per batch (CUDA)
      sum += r.lossSum;
      count += r.count;
    }
    const record: EvalRecord = { kind: 'eval', step, tokens, loss: sum / count, perplexity: Math.exp(sum / count) };
    metrics.write(record);
    result.evals.push(record);
    log(formatEvalLine(record));
  };

  const end = Math.min(s.maxBatches, options.stopAtStep ?? Infinity);
  const tokensCounted = s.globalBatch * (s.seqLen - 1);
  const trainStep = new TrainStep(be, graph, optimizer, s.clipNorm);
  let windowStart = performance.now(), windowTokens = 0;
  const runStart = performance.now();
  /** The results that came back (trainStep.settle: on CUDA they are read once per log interval), in step order. */
  const settle = () => {
    const done = trainStep.settle();
    for (const r of done) result.losses.push({ step: r.step, loss: r.lossSum / tokensCounted });
    return done;
  };
  for (let step = startStep; step < end; step++) {
    const lr = s.optimizer.lr * lrFactor(s.schedule, step);
    trainStep.run(step + 1, accumulation, (micro) => source.batch(step, 0, 1, micro, s.microbatch), lr, 1 / tokensCounted);
    tokens += tokensPerBatch;
    windowTokens += tokensPerBatch;
    result.endStep = step + 1;

    const done = step + 1;
    const evalNow = !!s.evalInterval && done % s.evalInterval === 0, saveNow = !!s.saveInterval && done % s.saveInterval === 0;
    if (done % s.logInterval === 0 || done === end) {
      const last = settle().pop()!;
      const seconds = (performance.now() - windowStart) / 1000;
      const rate = windowTokens / Math.max(seconds, 1e-9);
      const elapsed = (performance.now() - runStart) / 1000;
      const record: TrainRecord = {
        kind: 'train', step: done, tokens, loss: last.lossSum / tokensCounted, lr, gradNorm: last.gradNorm, tokensPerSecond: rate,
        mfu: options.peakFlops ? (rate * flops) / options.peakFlops : null,
        etaSeconds: (elapsed / (done - startStep)) * (s.maxBatches - done),
      };
      metrics.write(record);
      log(formatTrainLine(record, s.maxBatches));
      windowStart = performance.now();
      windowTokens = 0;
    } else if (evalNow || saveNow) {
      settle(); // a bad token id surfaces before an eval or a checkpoint, not after
    }
    // Tokens/s and MFU are the training's own: the window skips the time of evals and saves.
    const paused = performance.now();
    if (evalNow) evaluate(done);
    if (saveNow) await save(done);
    windowStart += performance.now() - paused;
  }
  settle();
  trainStep.dispose();
  if (result.endStep === s.maxBatches && result.endStep > startStep) {
    if (!s.evalInterval || result.endStep % s.evalInterval !== 0) evaluate(result.endStep);
    if (!s.saveInterval || result.endStep % s.saveInterval !== 0) await save(result.endStep);
  }
  return result;
}

/** A checkpoint tensor's values, checked against the run's shape for it. */
function checkLength(values: Float32Array, shape: readonly number[], name: string, where: string): Float32Array {
  if (values.length !== shape.reduce((a, b) => a * b, 1)) throw new ConfigError(`${where}: ${name} has ${values.length} values, the run's model needs [${shape}]`);
  return values;
}
