import type { Command } from '../main.js';
import { DEVICE_FLAGS, MODEL_FLAG, openOptions } from '../model-flags.js';
import { openForInference } from '../../generate/open.js';
import { evaluateIclTasks, formatIclTable, loadIclTasks } from '../../eval/index.js';
import { Progress } from '../../util/progress.js';
import { UserError } from '../../util/errors.js';

export const evalIclCommand: Command = {
  spec: {
    name: 'eval icl',
    summary: "In-context-learning accuracy on llm-foundry's task files (LAMBADA, HellaSwag, PIQA, Winograd, …)",
    usage: 'mpt eval icl --model M --tasks TASKS.yaml [--batch-size N] [--json]',
    flags: {
      ...MODEL_FLAG,
      tasks: { type: 'string', placeholder: 'YAML', description: "An llm-foundry tasks file: icl_tasks: [{label, dataset_uri, num_fewshot, icl_task_type, …}] (required)." },
      'batch-size': { type: 'integer', placeholder: 'N', default: 8, description: "Sequences per forward pass (a task's batch_size wins)." },
      json: { type: 'boolean', description: 'Print {"results": [{name, label, num_fewshot, category, icl_task_type, accuracy, correct, total}]} instead of a table.' },
      ...DEVICE_FLAGS,
    },
    details: `Task types: language_modeling (accuracy of the greedy continuation), multiple_choice (the choice
with the highest mean log-likelihood per token), schema (the context under which the continuation
has the highest mean log-likelihood). Prompts, few-shot draws (fewshot_random_seed, default 1234)
and defaults (example_delimiter "\\n", continuation_delimiter " ") follow llm-foundry.

Example:
  mpt eval icl --model ./mpt-1b --tasks eval/yamls/tasks.yaml`,
  },
  async run(args) {
    const f = args.flags;
    const tasksFile = f.tasks as string | undefined;
    if (!tasksFile) throw new UserError('mpt eval icl: --tasks is required (an llm-foundry tasks YAML)');
    const batchSize = f['batch-size'] as number;
    if (batchSize < 1) throw new UserError(`--batch-size must be ≥ 1, got ${batchSize}`);
    const tasks = loadIclTasks(tasksFile, (message) => process.stderr.write(`mpt: warning: ${message}\n`));
    const { model, tokenizer } = await openForInference(openOptions(args));
    const quiet = !process.stderr.isTTY && Boolean(f.json);
    let progress: Progress | undefined;
    let current = '';
    const results = evaluateIclTasks(model, tokenizer, tasks, {
      batchSize,
      onProgress: (name, done, total) => {
        if (name !== current) {
          progress?.finish();
          progress = new Progress({ label: name, total, unit: 'seqs', quiet });
          current = name;
        }
        progress!.set(done);
      },
    });
    progress?.finish();
    if (f.json) {
      const out = results.map((r) => ({
        name: r.name, label: r.label, num_fewshot: r.numFewshot, category: r.category, icl_task_type: r.taskType,
        accuracy: r.accuracy, correct: r.correct, total: r.total,
      }));
      process.stdout.write(JSON.stringify({ results: out }) + '\n');
      return;
    }
    process.stdout.write(formatIclTable(results));
  },
};
