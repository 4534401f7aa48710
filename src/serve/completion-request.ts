import { onlyNeutral, refuseUnknown, type Body } from './fields.js';
import { checkModel, commonRequest, completionPrompts, COMMON_FIELDS, type GenerationRequest, type ServedModel } from './requests.js';

const FIELDS = [...COMMON_FIELDS, 'prompt', 'echo', 'logprobs', 'suffix', 'best_of'];

/** POST /v1/completions: validate the body into a generation request. */
export function parseCompletionRequest(body: Body, served: ServedModel): GenerationRequest {
  refuseUnknown(body, FIELDS);
  checkModel(body, served);
  onlyNeutral(body, 'echo', (v) => v === false, 'echo');
  onlyNeutral(body, 'logprobs', () => false, 'logprobs');
  onlyNeutral(body, 'suffix', () => false, 'suffix (insertion)');
  onlyNeutral(body, 'best_of', (v) => v === 1, 'best_of other than 1');
  return commonRequest(body, served, completionPrompts(body, served));
}
