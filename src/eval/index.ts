/**
 * Evaluation: perplexity over text and llm-foundry's in-context-learning tasks.
 *
 *   readEvalTokens(path, tokenizer, { onBadLine? }) → { tokens, bytes, documents, files }
 *   evaluatePerplexity(model, tokens, { windowLength?, stride?, dropLast?, bytes?, batchSize?, onProgress? })
 *     → { tokens, meanLoss, perplexity, bitsPerByte, … }
 *   loadIclTasks(tasksYaml, onWarning?) → IclTaskConfig[]
 *   evaluateIclTasks(model, tokenizer, tasks, { batchSize?, maxTokens?, onProgress? }) → IclResult[]
 *   scoreSpans(model, [{ ids, from }], options) → [{ logProb, tokens, greedy }]   (the shared primitive)
 *   spanTokenLogProbs(model, [{ ids, from }], k, options) → per span token { id, logProb, top: k best }
 */
export { scoreSpans, spanTokenLogProbs, type SpanRequest, type SpanScore, type ScoreOptions } from './score.js';
export { slidingWindows, type Window, type WindowOptions } from './windows.js';
export { readEvalTokens, type EvalTokens, type ReadEvalOptions } from './perplexity-data.js';
export { evaluatePerplexity, type PerplexityOptions, type PerplexityResult } from './perplexity.js';
export { loadIclTasks, ICL_TASK_TYPES, type IclTaskConfig, type IclTaskType } from './icl/tasks-config.js';
export { readIclDataset, type IclExample } from './icl/dataset.js';
export { buildItems, type IclItem, type PromptFormat } from './icl/prompts.js';
export { evaluateIclTasks, type IclResult, type IclRunOptions } from './icl/run.js';
export { formatIclTable } from './icl/report.js';
