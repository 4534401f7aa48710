import type { MptModel } from '../../model/mpt.js';
import type { Tokenizer } from '../../tokenizer/index.js';
import { ConfigError } from '../../util/errors.js';
import { scoreSpans, type SpanRequest } from '../score.js';
import { pick } from './accuracy.js';
import { readIclDataset, type IclExample } from './dataset.js';
import { buildItems } from './prompts.js';
import type { IclTaskConfig, IclTaskType } from './tasks-config.js';

/** The accuracy of one task at one number of shots (and one category, for has_categories tasks). */
export interface IclResult {
  /** llm-foundry's evaluator label: `label/N-shot`, or `label/N-shot/category`. */
  name: string;
  label: string;
  taskType: IclTaskType;
  numFewshot: number;
  category: string | null;
  correct: number;
  total: number;
  accuracy: number;
  /** Per question: the candidate picked (-1: a language-modeling continuation that greedy decoding misses). */
  picks: number[];
}

export interface IclRunOptions {
  /** Sequences per forward pass when the task does not set batch_size (default 8). */
  batchSize?: number;
  /** Most padded positions per forward pass (default 4096). */
  maxTokens?: number;
  /** Progress of one evaluation: sequences scored so far of total. */
  onProgress?: (name: string, done: number, total: number) => void;
}

/** Run every task at every requested number of shots; results in the order of the tasks file. */
export function evaluateIclTasks(model: MptModel, tokenizer: Tokenizer, tasks: readonly IclTaskConfig[], options: IclRunOptions = {}): IclResult[] {
  const results: IclResult[] = [];
  for (const task of tasks) {
    const maxSeqLen = task.maxSeqLen ?? model.config.maxSeqLen;
    if (maxSeqLen > model.config.maxSeqLen) {
      throw new ConfigError(`task "${task.label}": max_seq_len ${maxSeqLen} exceeds the model's ${model.config.maxSeqLen}`);
    }
    const examples = readIclDataset(task.datasetPath, task.taskType, task.hasCategories);
    for (const numFewshot of task.numFewshot) {
      for (const [category, subset] of byCategory(examples, task.hasCategories)) {
        const name = `${task.label}/${numFewshot}-shot${category === null ? '' : `/${category}`}`;
        results.push(evaluateOne(model, tokenizer, task, subset, numFewshot, maxSeqLen, name, category, options));
      }
    }
  }
  return results;
}

function evaluateOne(
  model: MptModel, tokenizer: Tokenizer, task: IclTaskConfig, examples: IclExample[], numFewshot: number,
  maxSeqLen: number, name: string, category: string | null, options: IclRunOptions,
): IclResult {
  const items = buildItems(examples, tokenizer, {
    promptString: task.promptString, exampleDelimiter: task.exampleDelimiter, continuationDelimiter: task.continuationDelimiter,
    numFewshot, seed: task.fewshotRandomSeed, maxSeqLen, file: task.datasetPath,
  });
  const requests: SpanRequest[] = items.flatMap((item) => item.candidates);
  options.onProgress?.(name, 0, requests.length);
  const scores = scoreSpans(model, requests, {
    maxRows: task.batchSize ?? options.batchSize ?? 8,
    maxTokens: options.maxTokens ?? 4096,
    onProgress: (done) => options.onProgress?.(name, done, requests.length),
  });
  let at = 0, correct = 0;
  const picks = items.map((item) => {
    const choice = pick(task.taskType, scores.slice(at, at + item.candidates.length));
    at += item.candidates.length;
    if (choice === item.gold) correct++;
    return choice;
  });
  return {
    name, label: task.label, taskType: task.taskType, numFewshot, category,
    correct, total: items.length, accuracy: correct / items.length, picks,
  };
}

/**
 * llm-foundry evaluates a has_categories task as one sub-task per category (few-shot examples drawn
 * within the category); categories in sorted order. Without categories, one group of everything.
 */
function byCategory(examples: IclExample[], hasCategories: boolean): [string | null, IclExample[]][] {
  if (!hasCategories) return [[null, examples]];
  const groups = new Map<string, IclExample[]>();
  for (const e of examples) {
    const key = e.category!;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push(e);
  }
  return [...groups.keys()].sort().map((k) => [k, groups.get(k)!]);
}
