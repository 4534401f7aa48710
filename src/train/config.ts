import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parseHfConfig } from '../io/hf-config.js';
import { localPathOrHubName } from '../io/hub.js';
import type { MptConfig } from '../model/config.js';
import { ConfigError, UserError } from '../util/errors.js';
import { parseDuration, toBatches, type BatchGeometry, type Duration } from './duration.js';
import { checkInitFn, DEFAULT_INIT, type InitSettings } from './init.js';
import type { RunSettings } from './loop.js';
import type { OptimizerKind } from './optimizer.js';
import { checkScheduleKind } from './schedule.js';

/**
 * `mpt train CONFIG.yaml [key=value …]`: llm-foundry's training YAML → RunSettings. Overrides are
 * dotted paths (`optimizer.lr=1e-3`, `max_duration=10ba`), values parsed as YAML. `${name}` in a
 * string is replaced by the top-level `name` (as llm-foundry's OmegaConf variables, e.g.
 * `${max_seq_len}`). Unknown keys are errors that name the key.
 */
const TOP_KEYS = new Set([
  'model', 'tokenizer', 'train_loader', 'eval_loader', 'optimizer', 'scheduler', 'algorithms', 'max_duration',
  'eval_interval', 'global_train_batch_size', 'device_train_microbatch_size', 'precision', 'seed', 'save_folder',
  'save_interval', 'save_num_checkpoints_to_keep', 'load_path', 'autoresume',
  // llm-foundry keys with an obvious meaning here:
  'run_name', 'max_seq_len', 'data_local', 'data_remote', 'device_eval_batch_size', 'eval_subset_num_batches',
  'console_log_interval', 'progress_bar', 'log_to_console', 'variables',
]);

/** Architecture keys of either format are handed to the config.json parser; these are training-only. */
const MODEL_TRAINING_KEYS = new Set([
  'name', 'pretrained', 'pretrained_model_name_or_path', 'init_device', 'param_init_fn', 'init_std', 'emb_init_std', 'emb_init_uniform_lim',
  'init_gain', 'fan_mode', 'init_nonlinearity', 'init_div_is_residual', 'init_config', 'loss_fn', 'attn_impl', 'attn_pdrop',
  'resid_pdrop', 'emb_pdrop', 'verbose', 'use_cache', 'low_precision_layernorm',
]);

export interface ParsedTrainConfig {
  settings: Omit<RunSettings, 'maxBatches' | 'schedule' | 'evalInterval' | 'saveInterval'>;
  durations: { max: Duration; warmup: Duration; evalInterval: Duration | null; saveInterval: Duration | null; tMax: Duration | null };
  scheduleKind: RunSettings['schedule']['kind'];
  alphaI: number;
  alphaF: number;
  trainLoader: Obj;
  /** llm-foundry's eval_loader, or null: evaluate on the training data's held-out split. */
  evalLoader: Obj | null;
  tokenizer: string | null;
  file: string;
}

type Obj = Record<string, unknown>;

export function readTrainConfig(file: string, overrides: string[] = []): ParsedTrainConfig {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, 'utf8'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new UserError(`${file}: no such file`);
    throw new ConfigError(`${file}: not valid YAML (${(error as Error).message})`);
  }
  if (!isObj(raw)) throw new ConfigError(`${file}: expected a mapping of training settings`);
  for (const o of overrides) applyOverride(raw, o, file);
  return parseTrainConfig(interpolate(raw, raw, file) as Obj, file);
}

export function parseTrainConfig(raw: Obj, file: string): ParsedTrainConfig {
  for (const key of Object.keys(raw)) if (!TOP_KEYS.has(key)) throw new ConfigError(`${file}: unknown key "${key}"`);
  const where = (k: string) => `${file}: ${k}`;
  const baseDir = dirname(resolve(file));
  const path = (p: string | null) => (p === null ? null : isAbsolute(p) ? p : resolve(baseDir, p));
  const pathOrHubName = (p: string | null) => (p === null ? null : localPathOrHubName(p, baseDir));

  const model = obj(raw.model, where('model'));
  const pretrained = pathOrHubName(optString(model.pretrained ?? model.pretrained_model_name_or_path, where('model.pretrained')));
  const config = pretrained ? null : modelConfig(model, where('model'));
  const init: InitSettings = {
    paramInitFn: model.param_init_fn === undefined ? DEFAULT_INIT.paramInitFn : checkInitFn(model.param_init_fn, where('model')),
    initStd: num(model.init_std, DEFAULT_INIT.initStd, where('model.init_std')),
    embInitStd: model.emb_init_std == null ? null : num(model.emb_init_std, 0, where('model.emb_init_std')),
    initGain: num(model.init_gain, DEFAULT_INIT.initGain, where('model.init_gain')),
    fanMode: oneOf(model.fan_mode, ['fan_in', 'fan_out'] as const, DEFAULT_INIT.fanMode, where('model.fan_mode')),
    nonlinearity: oneOf(model.init_nonlinearity, ['relu', 'leaky_relu', 'linear'] as const, DEFAULT_INIT.nonlinearity, where('model.init_nonlinearity')),
    initDivIsResidual: typeof model.init_div_is_residual === 'number' ? model.init_div_is_residual : model.init_div_is_residual === undefined ? true : Boolean(model.init_div_is_residual),
  };
  if (model.emb_init_uniform_lim != null) throw new ConfigError(`${where('model.emb_init_uniform_lim')}: uniform embedding init is not supported; use emb_init_std`);

  const optimizer = obj(raw.optimizer, where('optimizer'));
  const optName = oneOf(optimizer.name, ['decoupled_adamw', 'adamw'] as const, undefined, where('optimizer.name')) as OptimizerKind;
  checkKeys(optimizer, ['name', 'lr', 'betas', 'eps', 'weight_decay'], where('optimizer'));
  const betas = optimizer.betas === undefined ? [0.9, 0.999] : optimizer.betas;
  if (!Array.isArray(betas) || betas.length !== 2 || !betas.every((b) => typeof b === 'number' && b >= 0 && b < 1)) {
    throw new ConfigError(`${where('optimizer.betas')}: expected two numbers in [0, 1), got ${JSON.stringify(optimizer.betas)}`);
  }

  const scheduler = obj(raw.scheduler, where('scheduler'));
  checkKeys(scheduler, ['name', 't_warmup', 'alpha_f', 'alpha_i', 'alpha', 't_max'], where('scheduler'));
  const scheduleKind = checkScheduleKind(scheduler.name, where('scheduler.name'));

  const algorithms = raw.algorithms === undefined ? {} : obj(raw.algorithms, where('algorithms'));
  checkKeys(algorithms, ['gradient_clipping'], where('algorithms'));
  let clipNorm: number | null = null;
  if (algorithms.gradient_clipping !== undefined) {
    const gc = obj(algorithms.gradient_clipping, where('algorithms.gradient_clipping'));
    checkKeys(gc, ['clipping_type', 'clipping_threshold'], where('algorithms.gradient_clipping'));
    if ((gc.clipping_type ?? 'norm') !== 'norm') throw new ConfigError(`${where('algorithms.gradient_clipping.clipping_type')}: only "norm" is supported, got ${JSON.stringify(gc.clipping_type)}`);
    clipNorm = num(gc.clipping_threshold, undefined, where('algorithms.gradient_clipping.clipping_threshold'));
  }

  const trainLoader = obj(raw.train_loader, where('train_loader'));
  const seqLen = config?.maxSeqLen ?? int(raw.max_seq_len, undefined, where('max_seq_len'));
  const globalBatch = int(raw.global_train_batch_size, undefined, where('global_train_batch_size'));
  const micro = raw.device_train_microbatch_size === 'auto' ? globalBatch : int(raw.device_train_microbatch_size, globalBatch, where('device_train_microbatch_size'));
  const precision = oneOf(raw.precision, ['fp32', 'amp_bf16'] as const, 'fp32', where('precision'));
  // The tokenizer is what `mpt export` copies beside the weights (kept absolute for an export run elsewhere).
  const tokenizer = pathOrHubName(raw.tokenizer === undefined ? null : optString(obj(raw.tokenizer, where('tokenizer')).name, where('tokenizer.name')));
  const saveFolder = path(optString(raw.save_folder, where('save_folder')));

  return {
    file,
    trainLoader,
    evalLoader: raw.eval_loader === undefined || raw.eval_loader === null ? null : obj(raw.eval_loader, where('eval_loader')),
    tokenizer,
    scheduleKind,
    alphaI: num(scheduler.alpha ?? scheduler.alpha_i, 1, where('scheduler.alpha_i')),
    alphaF: num(scheduler.alpha_f, scheduleKind === 'cosine_with_warmup' || scheduleKind === 'linear_decay_with_warmup' ? 0 : 1, where('scheduler.alpha_f')),
    durations: {
      max: parseDuration(raw.max_duration, where('max_duration')),
      warmup: parseDuration(scheduler.t_warmup ?? '0ba', where('scheduler.t_warmup')),
      tMax: scheduler.t_max === undefined ? null : parseDuration(scheduler.t_max, where('scheduler.t_max')),
      evalInterval: raw.eval_interval === undefined ? null : parseDuration(typeof raw.eval_interval === 'number' ? `${raw.eval_interval}ba` : raw.eval_interval, where('eval_interval')),
      saveInterval: raw.save_interval === undefined ? null : parseDuration(typeof raw.save_interval === 'number' ? `${raw.save_interval}ba` : raw.save_interval, where('save_interval')),
    },
    settings: {
      model: config as MptConfig, // filled from the pretrained folder by the command when null
      init,
      pretrained,
      seqLen,
      globalBatch,
      microbatch: micro,
      optimizer: {
        kind: optName, lr: num(optimizer.lr, undefined, where('optimizer.lr')), betas: [betas[0], betas[1]],
        eps: num(optimizer.eps, 1e-8, where('optimizer.eps')), weightDecay: num(optimizer.weight_decay, 0, where('optimizer.weight_decay')),
      },
      clipNorm,
      precision,
      seed: int(raw.seed, 17, where('seed')),
      evalBatchSize: int(raw.device_eval_batch_size, micro, where('device_eval_batch_size')),
      evalBatches: raw.eval_subset_num_batches === undefined || raw.eval_subset_num_batches === -1 ? null : int(raw.eval_subset_num_batches, undefined, where('eval_subset_num_batches')),
      logInterval: int(raw.console_log_interval === undefined ? 1 : String(raw.console_log_interval).replace(/ba$/, ''), 1, where('console_log_interval')),
      saveFolder,
      keepCheckpoints: int(raw.save_num_checkpoints_to_keep, -1, where('save_num_checkpoints_to_keep')),
      loadPath: path(optString(raw.load_path, where('load_path'))),
      autoresume: raw.autoresume === undefined ? false : bool(raw.autoresume, where('autoresume')),
      metricsFolder: saveFolder ?? resolve('.'),
      run: { tokenizer, configFile: resolve(file), format: typeof model.name === 'string' && model.name.startsWith('mpt') ? 'mpt' : 'mosaic_gpt' },
    },
  };
}

/** The durations in batches, once the batch geometry (and the data's epoch) is known. */
export function resolveRun(p: ParsedTrainConfig, samplesPerEpoch: number | null): RunSettings {
  const s = p.settings;
  const g: BatchGeometry = { samplesPerBatch: s.globalBatch, tokensPerBatch: s.globalBatch * s.seqLen, samplesPerEpoch };
  const maxBatches = Math.ceil(toBatches(p.durations.max, g, `${p.file}: max_duration`) - 1e-9);
  const withTotal = { ...g, totalBatches: maxBatches };
  const interval = (d: Duration | null, what: string) => (d === null ? null : Math.max(1, Math.round(toBatches(d, withTotal, `${p.file}: ${what}`))));
  return {
    ...s,
    maxBatches,
    schedule: {
      kind: p.scheduleKind, warmup: toBatches(p.durations.warmup, withTotal, `${p.file}: scheduler.t_warmup`),
      max: p.durations.tMax ? toBatches(p.durations.tMax, withTotal, `${p.file}: scheduler.t_max`) : maxBatches,
      alphaI: p.alphaI, alphaF: p.alphaF,
    },
    evalInterval: interval(p.durations.evalInterval, 'eval_interval'),
    saveInterval: interval(p.durations.saveInterval, 'save_interval'),
  };
}

/** The architecture keys → MptConfig through the same parser as config.json (either format). */
function modelConfig(model: Obj, where: string): MptConfig {
  const arch: Obj = {};
  for (const [k, v] of Object.entries(model)) if (!MODEL_TRAINING_KEYS.has(k)) arch[k] = v;
  const mptStyle = (typeof model.name === 'string' && model.name.startsWith('mpt')) || 'attn_config' in model || 'expansion_ratio' in model;
  arch.model_type = mptStyle ? 'mpt' : 'mosaic_gpt';
  return parseHfConfig(arch, where).config;
}

function applyOverride(raw: Obj, text: string, file: string): void {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new ConfigError(`override "${text}": expected key=value (e.g. optimizer.lr=1e-3)`);
  const keys = text.slice(0, eq).split('.');
  let value: unknown;
  try {
    value = parseYaml(text.slice(eq + 1));
  } catch {
    value = text.slice(eq + 1);
  }
  let node = raw;
  for (const k of keys.slice(0, -1)) {
    if (node[k] === undefined) node[k] = {};
    if (!isObj(node[k])) throw new ConfigError(`override "${text}": ${k} in ${file} is not a mapping`);
    node = node[k] as Obj;
  }
  node[keys[keys.length - 1]] = fromWorkingFolder(keys.join('.'), value);
}

/** Keys whose values are paths (folders, files) in the YAML; the two that may also be hub names are marked. */
const PATH_KEYS = new Map<string, 'path' | 'path or hub name'>([
  ['save_folder', 'path'], ['load_path', 'path'],
  ['train_loader.dataset.local', 'path'], ['eval_loader.dataset.local', 'path'],
  ['train_loader.dataset.paths', 'path'], ['eval_loader.dataset.paths', 'path'],
  ['tokenizer.name', 'path or hub name'], ['model.pretrained', 'path or hub name'], ['model.pretrained_model_name_or_path', 'path or hub name'],
]);

/**
 * A path in the YAML is relative to the YAML's folder; a path typed on the command line
 * (`train_loader.dataset.local=tokens`) is relative to the working folder, as the shell's own paths are,
 * so it is made absolute here. A name that may be a hub name stays as given unless it exists here.
 */
function fromWorkingFolder(key: string, value: unknown): unknown {
  const kind = PATH_KEYS.get(key);
  if (kind === undefined) return value;
  const absolute = (v: unknown) =>
    typeof v !== 'string' || v === '' ? v : kind === 'path' ? resolve(v) : localPathOrHubName(v, process.cwd());
  return Array.isArray(value) ? value.map(absolute) : absolute(value);
}

function interpolate(value: unknown, root: Obj, file: string): unknown {
  if (typeof value === 'string') {
    const whole = /^\$\{(\w+)\}$/.exec(value);
    const lookup = (name: string) => {
      const v = root[name] ?? (isObj(root.variables) ? root.variables[name] : undefined);
      if (v === undefined) throw new ConfigError(`${file}: \${${name}} names no top-level key`);
      return v;
    };
    if (whole) return lookup(whole[1]);
    return value.replace(/\$\{(\w+)\}/g, (_, name: string) => String(lookup(name)));
  }
  if (Array.isArray(value)) return value.map((v) => interpolate(v, root, file));
  if (isObj(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, root, file)]));
  return value;
}

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

export function obj(v: unknown, where: string): Obj {
  if (!isObj(v)) throw new ConfigError(`${where}: ${v === undefined ? 'is missing' : 'expected a mapping'}`);
  return v;
}

export function checkKeys(o: Obj, allowed: string[], where: string): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw new ConfigError(`${where}: unknown key "${k}" (expected ${allowed.join(', ')})`);
}

function num(v: unknown, fallback: number | undefined, where: string): number {
  if (v === undefined || v === null) {
    if (fallback === undefined) throw new ConfigError(`${where}: is missing`);
    return fallback;
  }
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n)) throw new ConfigError(`${where}: expected a number, got ${JSON.stringify(v)}`);
  return n;
}

function int(v: unknown, fallback: number | undefined, where: string): number {
  const n = num(v, fallback, where);
  if (!Number.isInteger(n)) throw new ConfigError(`${where}: expected an integer, got ${JSON.stringify(v)}`);
  return n;
}

function bool(v: unknown, where: string): boolean {
  if (typeof v !== 'boolean') throw new ConfigError(`${where}: expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

function optString(v: unknown, where: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string' || v === '') throw new ConfigError(`${where}: expected a string, got ${JSON.stringify(v)}`);
  return v;
}

function oneOf<T extends string>(v: unknown, options: readonly T[], fallback: T | undefined, where: string): T {
  if (v === undefined && fallback !== undefined) return fallback;
  if (options.includes(v as T)) return v as T;
  throw new ConfigError(`${where}: ${v === undefined ? 'is missing' : JSON.stringify(v) + ' is not supported'} (expected ${options.join(' or ')})`);
}
