import { readFileSync } from 'node:fs';
import { FormatError, UserError } from '../../util/errors.js';
import type { IclTaskType } from './tasks-config.js';

/** One example of a task file, in llm-foundry's JSONL fields, string fields stripped as it strips them. */
export type IclExample =
  | { type: 'language_modeling'; context: string; continuation: string; category?: string }
  | { type: 'multiple_choice'; query: string; choices: string[]; gold: number; category?: string }
  | { type: 'schema'; contextOptions: string[]; continuation: string; gold: number; category?: string };

/**
 * Read a task's JSONL file. Every line must be a JSON object with the fields of its task type;
 * a bad line is an error naming the file and the line. Blank lines are skipped. String fields are
 * stripped of surrounding whitespace (llm-foundry's strip_data: top-level strings only, so the
 * entries of `choices` and `context_options` are kept as they are).
 */
export function readIclDataset(file: string, type: IclTaskType, needCategory: boolean): IclExample[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new UserError(`dataset file ${file} cannot be read`);
  }
  const examples: IclExample[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const bad = (problem: string) => new FormatError(`${file}:${i + 1}`, problem);
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      throw bad(`malformed JSON (${(error as Error).message})`);
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw bad('line is not a JSON object');
    examples.push(parseExample(value as Record<string, unknown>, type, needCategory, bad));
  });
  if (examples.length === 0) throw new FormatError(file, 'holds no examples');
  return examples;
}

function parseExample(o: Record<string, unknown>, type: IclTaskType, needCategory: boolean, bad: (p: string) => Error): IclExample {
  const str = (key: string): string => {
    const v = o[key];
    if (v === undefined) throw bad(`missing "${key}" (a ${type} example has ${FIELDS[type].join(', ')})`);
    if (typeof v !== 'string') throw bad(`"${key}" must be a string, got ${JSON.stringify(v)}`);
    return v.trim();
  };
  const list = (key: string): string[] => {
    const v = o[key];
    if (v === undefined) throw bad(`missing "${key}" (a ${type} example has ${FIELDS[type].join(', ')})`);
    if (!Array.isArray(v) || v.length === 0 || !v.every((s) => typeof s === 'string')) throw bad(`"${key}" must be a non-empty list of strings`);
    return v as string[];
  };
  const gold = (count: number): number => {
    const v = o.gold;
    if (v === undefined) throw bad('missing "gold" (the index of the correct choice)');
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) >= count) throw bad(`"gold" must be an index in [0, ${count}), got ${JSON.stringify(v)}`);
    return v as number;
  };
  const category = needCategory ? str('category') : undefined;
  switch (type) {
    case 'language_modeling':
      return { type, context: str('context'), continuation: str('continuation'), category };
    case 'multiple_choice': {
      const choices = list('choices');
      return { type, query: str('query'), choices, gold: gold(choices.length), category };
    }
    case 'schema': {
      const contextOptions = list('context_options');
      return { type, contextOptions, continuation: str('continuation'), gold: gold(contextOptions.length), category };
    }
  }
}

const FIELDS: Record<IclTaskType, string[]> = {
  language_modeling: ['context', 'continuation'],
  multiple_choice: ['query', 'choices', 'gold'],
  schema: ['context_options', 'continuation', 'gold'],
};
