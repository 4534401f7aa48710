import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { parameterShapes, type MptConfig } from '../model/config.js';
import { ConfigError } from '../util/errors.js';
import { Rng } from '../util/random.js';

/**
 * Initial weights for training from scratch, as MosaicGPT's param_init_fns (mosaicml/examples v0.0.4,
 * llm-foundry later) with a seeded generator of our own (util/random: the same seed gives the same
 * weights on every machine, though not PyTorch's numbers):
 * - `kaiming_normal_`: linear weights and embeddings ~ N(0, gain²/fan) with fan = in-features
 *   (fan_mode fan_in) or out-features (fan_out), gain from init_nonlinearity (relu: √2;
 *   leaky_relu: √(2/(1+init_gain²)); linear: 1);
 * - `baseline_`: N(0, init_std²) for the same tensors;
 * - then, with init_div_is_residual, the residual projections (attn.out_proj, mlp_down) ÷ √(2·n_layers);
 * - emb_init_std, when given, overrides the embeddings' init; LayerNorm weights 1; every bias 0.
 * The fused Wqkv is initialised as three [d, d] blocks: with fan_in all three share one std anyway.
 */
export interface InitSettings {
  paramInitFn: 'kaiming_normal_' | 'baseline_';
  initStd: number;
  embInitStd: number | null;
  initGain: number;
  fanMode: 'fan_in' | 'fan_out';
  nonlinearity: 'relu' | 'leaky_relu' | 'linear';
  initDivIsResidual: boolean | number;
}

export const DEFAULT_INIT: InitSettings = {
  paramInitFn: 'kaiming_normal_', initStd: 0.02, embInitStd: null, initGain: 0, fanMode: 'fan_in', nonlinearity: 'relu', initDivIsResidual: true,
};

/**
 * Normal draws come in blocks of this many values, each block from its own stream named by (seed, tensor,
 * block): the values do not depend on which thread fills a block or in what order, so a 1.3B init can use
 * every core (one core draws ~25M values a second).
 */
export const INIT_BLOCK = 1 << 20;

/** One block of normal draws: (tensor index, block index, standard deviation). */
export type InitJob = [tensor: number, block: number, std: number];

/** Fill one block of `data` (tensor number `tensor` of the parameter list) with N(0, std²) draws. */
export function fillInitBlock(data: Float32Array, seed: number, [tensor, block, std]: InitJob): number {
  const part = data.subarray(block * INIT_BLOCK, Math.min(data.length, (block + 1) * INIT_BLOCK));
  Rng.keyed(seed, tensor, block).fillNormal(part, std);
  return part.length;
}

export interface InitOptions {
  /** Called with the number of values filled, as blocks finish (a 1.3B init takes a while). */
  progress?: (values: number) => void;
  /** Worker threads for the normal draws; default one a core (at most 16), one for small models. */
  threads?: number;
}

/** Models below this many values are filled on the calling thread: workers take longer to start. */
const PARALLEL_FROM = 1 << 24;

/** Every parameter of the model by canonical name, initialised by `s` from `seed` (in shared memory). */
export async function initialWeights(config: MptConfig, s: InitSettings, seed: number, options: InitOptions = {}): Promise<Map<string, Float32Array>> {
  const weights = new Map<string, Float32Array>();
  const jobs: InitJob[] = [];
  const divisor = s.initDivIsResidual === true ? Math.sqrt(2 * config.nLayers) : s.initDivIsResidual === false ? 1 : s.initDivIsResidual;
  let total = 0, constant = 0;
  for (const [name, shape] of parameterShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    total += n;
    // Shared memory, so that worker threads fill the tensors in place.
    const data = new Float32Array(new SharedArrayBuffer(n * 4));
    if (shape.length === 1) {
      data.fill(name.endsWith('.bias') ? 0 : 1); // LayerNorm weights 1, biases 0
      constant += n;
    } else {
      const isEmbedding = name === 'wte.weight' || name === 'wpe.weight';
      const std = isEmbedding && s.embInitStd !== null ? s.embInitStd : standardDeviation(s, shape);
      const scaled = /\.(attn\.out|mlp\.down)\.weight$/.test(name) ? std / divisor : std;
      for (let block = 0; block * INIT_BLOCK < n; block++) jobs.push([weights.size, block, scaled]);
    }
    weights.set(name, data);
  }
  const tensors = [...weights.values()];
  options.progress?.(constant);
  const threads = options.threads ?? (total >= PARALLEL_FROM ? Math.min(16, availableParallelism()) : 1);
  if (threads > 1) await fillOnWorkers(tensors, seed, jobs, threads, options.progress);
  else {
    for (const job of jobs) {
      const values = fillInitBlock(tensors[job[0]], seed, job);
      options.progress?.(values);
    }
  }
  return weights;
}

/** The jobs spread over worker threads, each taking the next unclaimed block from a shared counter. */
async function fillOnWorkers(tensors: Float32Array[], seed: number, jobs: InitJob[], threads: number, progress?: (values: number) => void): Promise<void> {
  const next = new Int32Array(new SharedArrayBuffer(4));
  // Workers inherit the parent's Node flags; --input-type (set by `node --input-type=module -e`) makes them fail.
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
  const workerData = { tensors, seed, jobs, next };
  const workers = Array.from({ length: Math.min(threads, jobs.length) }, () => new Worker(new URL('./init-worker.js', import.meta.url), { workerData, execArgv }));
  try {
    await Promise.all(workers.map((worker, i) => new Promise<void>((resolve, reject) => {
      worker.on('message', (values: number) => progress?.(values));
      worker.on('error', reject);
      worker.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`init worker ${i} exited with code ${code}`))));
    })));
  } finally {
    for (const worker of workers) void worker.terminate();
  }
}

function standardDeviation(s: InitSettings, shape: number[]): number {
  if (s.paramInitFn === 'baseline_') return s.initStd;
  const fan = s.fanMode === 'fan_in' ? shape[1] : shape[0];
  const gain = s.nonlinearity === 'relu' ? Math.SQRT2 : s.nonlinearity === 'leaky_relu' ? Math.sqrt(2 / (1 + s.initGain ** 2)) : 1;
  return gain / Math.sqrt(fan);
}

export function checkInitFn(name: unknown, where: string): InitSettings['paramInitFn'] {
  if (name === 'kaiming_normal_' || name === 'baseline_') return name;
  throw new ConfigError(`${where}: param_init_fn ${JSON.stringify(name)} is not supported (kaiming_normal_ or baseline_)`);
}
