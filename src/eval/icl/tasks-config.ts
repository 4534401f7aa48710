import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse } from 'yaml';
import { ConfigError, UserError } from '../../util/errors.js';

/** The in-context-learning task types we run (llm-foundry's names). */
export const ICL_TASK_TYPES = ['language_modeling', 'multiple_choice', 'schema'] as const;
export type IclTaskType = (typeof ICL_TASK_TYPES)[number];

/** One entry of llm-foundry's `icl_tasks`, with its defaults applied (llm-foundry's build_icl_evaluators). */
export interface IclTaskConfig {
  label: string;
  /** Absolute path of the task's JSONL file. */
  datasetPath: string;
  taskType: IclTaskType;
  numFewshot: number[];
  promptString: string;
  exampleDelimiter: string;
  continuationDelimiter: string;
  hasCategories: boolean;
  fewshotRandomSeed: number;
  maxSeqLen?: number;
  batchSize?: number;
}

const KNOWN_KEYS = new Set([
  'label', 'dataset_uri', 'icl_task_type', 'num_fewshot', 'prompt_string', 'example_delimiter', 'continuation_delimiter',
  'has_categories', 'fewshot_random_seed', 'max_seq_len', 'batch_size', 'metric_names',
]);
/** Task types llm-foundry has that need generation or code execution: named so the error can say so. */
const OTHER_KNOWN_TYPES = ['question_answering', 'generation_task_with_answers', 'code_evaluation'];

/**
 * Read a tasks YAML: `icl_tasks: [...]` at the top (llm-foundry's tasks*.yaml), possibly inside a
 * larger eval config, or `icl_tasks: other.yaml`. Relative dataset_uri paths are looked up next to
 * the YAML first, then from the working directory (llm-foundry runs from its scripts folder).
 */
export function loadIclTasks(file: string, onWarning?: (message: string) => void): IclTaskConfig[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new UserError(`--tasks ${file}: no such file`);
  }
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (error) {
    throw new ConfigError(`${file}: not valid YAML (${(error as Error).message.split('\n')[0]})`);
  }
  const tasks = (doc as Record<string, unknown> | null)?.icl_tasks;
  if (typeof tasks === 'string') return loadIclTasks(resolve(dirname(file), tasks), onWarning);
  if (!Array.isArray(tasks)) throw new ConfigError(`${file}: expected a list under "icl_tasks"`);
  if (tasks.length === 0) throw new ConfigError(`${file}: "icl_tasks" is empty`);
  return tasks.map((raw, i) => parseTask(file, i, raw, onWarning));
}

function parseTask(file: string, index: number, raw: unknown, onWarning?: (message: string) => void): IclTaskConfig {
  let where = `${file}: icl_tasks[${index}]`;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(`${where}: expected a mapping`);
  const t = raw as Record<string, unknown>;
  const str = (key: string, fallback?: string): string => {
    const v = t[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new ConfigError(`${where}: "${key}" is required`);
    }
    if (typeof v !== 'string') throw new ConfigError(`${where}: "${key}" must be a string, got ${JSON.stringify(v)}`);
    return v;
  };
  const int = (key: string, min: number): number | undefined => {
    const v = t[key];
    if (v === undefined || v === null) return undefined;
    if (!Number.isInteger(v) || (v as number) < min) throw new ConfigError(`${where}: "${key}" must be an integer ≥ ${min}, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const label = str('label');
  where = `${file}: task "${label}"`;
  const type = str('icl_task_type');
  if (!(ICL_TASK_TYPES as readonly string[]).includes(type)) {
    const why = OTHER_KNOWN_TYPES.includes(type) ? 'is not supported yet' : 'is unknown';
    throw new ConfigError(`${where}: icl_task_type "${type}" ${why} (supported: ${ICL_TASK_TYPES.join(', ')})`);
  }
  const shots = t.num_fewshot;
  const numFewshot = typeof shots === 'number' ? [shots] : shots;
  if (!Array.isArray(numFewshot) || numFewshot.length === 0 || !numFewshot.every((n) => Number.isInteger(n) && n >= 0)) {
    throw new ConfigError(`${where}: "num_fewshot" must be a list of integers ≥ 0 (e.g. [0, 5]), got ${JSON.stringify(shots)}`);
  }
  const hasCategories = t.has_categories ?? false;
  if (typeof hasCategories !== 'boolean') throw new ConfigError(`${where}: "has_categories" must be true or false`);
  for (const key of Object.keys(t)) if (!KNOWN_KEYS.has(key)) onWarning?.(`${where}: ignoring unknown key "${key}"`);
  return {
    label,
    datasetPath: resolveDataset(file, str('dataset_uri'), where),
    taskType: type as IclTaskType,
    numFewshot: numFewshot as number[],
    promptString: str('prompt_string', ''),
    exampleDelimiter: str('example_delimiter', '\n'),
    continuationDelimiter: str('continuation_delimiter', ' '),
    hasCategories,
    fewshotRandomSeed: int('fewshot_random_seed', 0) ?? 1234,
    maxSeqLen: int('max_seq_len', 2),
    batchSize: int('batch_size', 1),
  };
}

function resolveDataset(file: string, uri: string, where: string): string {
  if (/^[a-z][a-z0-9+]*:\/\//i.test(uri)) throw new ConfigError(`${where}: dataset_uri "${uri}" is remote; download it and give a local path`);
  if (isAbsolute(uri)) {
    if (!existsSync(uri)) throw new UserError(`${where}: dataset file ${uri} does not exist`);
    return uri;
  }
  const nextToYaml = resolve(dirname(file), uri);
  if (existsSync(nextToYaml)) return nextToYaml;
  const fromCwd = resolve(uri);
  if (existsSync(fromCwd)) return fromCwd;
  throw new UserError(`${where}: dataset file "${uri}" does not exist (looked in ${dirname(resolve(file))} and ${process.cwd()})`);
}
