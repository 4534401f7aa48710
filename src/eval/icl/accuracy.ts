import type { IclTaskType } from './tasks-config.js';
import type { SpanScore } from '../score.js';

/**
 * Which candidate the model picks and whether that is right, as llm-foundry's metrics decide:
 *  - language_modeling (InContextLearningLMAccuracy): right when every continuation token is the
 *    argmax of its position's logits, i.e. greedy decoding would produce the continuation.
 *  - multiple_choice and schema (both InContextLearningMultipleChoiceAccuracy): each candidate's
 *    perplexity is exp(F.cross_entropy(continuation logits, continuation tokens)), and cross_entropy
 *    averages over the continuation's tokens, so the pick is the candidate with the highest MEAN
 *    log-likelihood per continuation token (length-normalized, not the sum); the first on a tie, as
 *    `subset.index(min(subset))`. For schema the continuation is shared and the contexts differ, so
 *    this chooses the context under which the continuation is most likely.
 */
export function pick(type: IclTaskType, scores: readonly SpanScore[]): number {
  if (type === 'language_modeling') return scores[0]!.greedy ? 0 : -1;
  let best = 0;
  for (let i = 1; i < scores.length; i++) {
    if (meanLogProb(scores[i]!) > meanLogProb(scores[best]!)) best = i;
  }
  return best;
}

export const meanLogProb = (s: SpanScore): number => s.logProb / s.tokens;
