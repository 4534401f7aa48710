import type { Tokenizer } from '../../tokenizer/index.js';
import { FormatError } from '../../util/errors.js';
import type { SpanRequest } from '../score.js';
import type { IclExample } from './dataset.js';
import { fewshotIndices } from './fewshot.js';
import { PythonRandom } from './python-random.js';

/**
 * Turning task examples into scored token sequences the way llm-foundry's InContextLearning*Dataset
 * does (llmfoundry/eval/datasets/in_context_learning_evaluation.py), so that the same JSONL and
 * tasks YAML give the same inputs:
 *
 *   preamble = prompt_string, then for each few-shot example (its own delimiters, its true answer):
 *              [example_delimiter if anything precedes] context continuation_delimiter answer
 *   context  = ([example_delimiter if the preamble is non-empty] context continuation_delimiter).rstrip()
 *   answer   = the continuation (or choice), with a leading space when the tokenizer needs one
 *              (GPT-NeoX: " a" is one token) and it has none
 *   tokens   = encode(preamble) + encode(context) + encode(answer), encoded separately as llm-foundry
 *              does; the context is cut from the left when all three exceed max_seq_len.
 *
 * Schema (Winograd) examples have several contexts and one continuation; their few-shot examples use
 * the gold context. Following llm-foundry to the letter, a schema context gets the (right-stripped)
 * continuation_delimiter only when a preamble precedes it, and is not stripped itself.
 */
export interface PromptFormat {
  promptString: string;
  exampleDelimiter: string;
  continuationDelimiter: string;
}

/** One question: its candidate sequences (one for language modeling) and which is right. */
export interface IclItem {
  candidates: SpanRequest[];
  gold: number;
}

export interface BuildOptions extends PromptFormat {
  numFewshot: number;
  seed: number;
  maxSeqLen: number;
  /** Named in errors: the dataset file. */
  file: string;
}

export function buildItems(examples: readonly IclExample[], tokenizer: Tokenizer, options: BuildOptions): IclItem[] {
  const rng = new PythonRandom(options.seed);
  const prefixSpace = tokenizer.encode(' a').length === 1;
  const withSpace = (answer: string) => (prefixSpace && !answer.startsWith(' ') ? ` ${answer}` : answer);
  const { exampleDelimiter: exDelim, continuationDelimiter: contDelim } = options;

  return examples.map((example, index) => {
    let preamble = options.promptString;
    if (options.numFewshot > 0) {
      for (const shot of fewshotIndices(examples.length, options.numFewshot, index, rng)) {
        const [context, answer] = solved(examples[shot]!);
        preamble += `${preamble.length > 0 ? exDelim : ''}${context}${contDelim}${answer}`;
      }
    }
    const preambleIds = tokenizer.encode(preamble);
    const sequence = (context: string, answer: string): SpanRequest => {
      const contextIds = [...preambleIds, ...tokenizer.encode(context)];
      const answerIds = tokenizer.encode(answer);
      const where = `${options.file}: example ${index + 1}`;
      if (answerIds.length === 0) throw new FormatError(where, 'has an empty answer (nothing to score)');
      const room = options.maxSeqLen - answerIds.length;
      if (room < 1) throw new FormatError(where, `its answer has ${answerIds.length} tokens, leaving no room for context in max_seq_len ${options.maxSeqLen}`);
      if (contextIds.length === 0) throw new FormatError(where, 'has an empty context (nothing to predict the answer from)');
      const kept = contextIds.length > room ? contextIds.slice(contextIds.length - room) : contextIds;
      return { ids: [...kept, ...answerIds], from: kept.length };
    };
    const lead = preamble.length > 0 ? exDelim : '';
    switch (example.type) {
      case 'language_modeling':
        return { candidates: [sequence(`${lead}${example.context}${contDelim}`.trimEnd(), withSpace(example.continuation))], gold: 0 };
      case 'multiple_choice': {
        const context = `${lead}${example.query}${contDelim}`.trimEnd();
        return { candidates: example.choices.map((choice) => sequence(context, withSpace(choice))), gold: example.gold };
      }
      case 'schema': {
        const contexts = preamble.length > 0
          ? example.contextOptions.map((c) => `${exDelim}${c}${contDelim.trimEnd()}`)
          : example.contextOptions;
        const continuation = withSpace(example.continuation);
        return { candidates: contexts.map((c) => sequence(c, continuation)), gold: example.gold };
      }
    }
  });
}

/** A few-shot example's context and true answer (answers in the preamble get no added space). */
function solved(example: IclExample): [string, string] {
  switch (example.type) {
    case 'language_modeling': return [example.context, example.continuation];
    case 'multiple_choice': return [example.query, example.choices[example.gold]!];
    case 'schema': return [example.contextOptions[example.gold]!, example.continuation];
  }
}
