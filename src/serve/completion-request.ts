import { unsupported } from './api-error.js';
import { onlyNeutral, optionalBoolean, optionalInteger, refuseUnknown, type Body } from './fields.js';
import { MAX_LOGPROBS } from './logprobs.js';
import { checkModel, commonRequest, completionPrompts, COMMON_FIELDS, type GenerationRequest, type ServedModel } from './requests.js';

const FIELDS = [...COMMON_FIELDS, 'prompt', 'echo', 'logprobs', 'suffix', 'best_of'];

/** POST /v1/completions: validate the body into a generation request. */
export function parseCompletionRequest(body: Body, served: ServedModel): GenerationRequest {
  refuseUnknown(body, FIELDS);
  checkModel(body, served);
  onlyNeutral(body, 'suffix', () => false, 'suffix (insertion)');
  onlyNeutral(body, 'best_of', (v) => v === 1, 'best_of other than 1');
  const echo = optionalBoolean(body, 'echo') ?? false;
  const logprobs = optionalInteger(body, 'logprobs', { min: 0, max: MAX_LOGPROBS });
  const request = commonRequest(body, served, completionPrompts(body, served), 'max_tokens', echo);
  // Streamed chunks carry text pieces as the stop-string watcher releases them, which do not line up
  // with tokens; rather than send logprobs that do not match the text, streaming them is refused.
  if (request.stream && logprobs !== undefined) throw unsupported('logprobs', 'logprobs with stream');
  if (request.stream && echo) throw unsupported('echo', 'echo with stream');
  return { ...request, echo, logprobs };
}
