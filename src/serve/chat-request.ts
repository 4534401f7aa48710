import { badField, unsupported } from './api-error.js';
import { CHAT_STOP, renderChat, type ChatMessage } from './chat-template.js';
import { describe, onlyNeutral, optionalBoolean, optionalInteger, refuseUnknown, type Body } from './fields.js';
import { MAX_LOGPROBS } from './logprobs.js';
import { checkModel, commonRequest, COMMON_FIELDS, type GenerationRequest, type ServedModel } from './requests.js';

const FIELDS = [
  ...COMMON_FIELDS, 'messages', 'max_completion_tokens', 'logprobs', 'top_logprobs', 'response_format',
  'tools', 'tool_choice', 'parallel_tool_calls',
];

/** POST /v1/chat/completions: validate the body and render its messages with the plain-text template. */
export function parseChatRequest(body: Body, served: ServedModel): GenerationRequest {
  refuseUnknown(body, FIELDS);
  checkModel(body, served);
  const logprobs = optionalBoolean(body, 'logprobs') ?? false;
  const top = optionalInteger(body, 'top_logprobs', { min: 0, max: MAX_LOGPROBS });
  if (top !== undefined && !logprobs) throw badField('top_logprobs', 'top_logprobs needs logprobs: true');
  onlyNeutral(body, 'response_format', (v) => isObject(v) && v.type === 'text', 'response_format other than {"type": "text"}');
  onlyNeutral(body, 'tools', (v) => Array.isArray(v) && v.length === 0, 'tools (function calling)');
  onlyNeutral(body, 'tool_choice', (v) => v === 'none', 'tool_choice');
  onlyNeutral(body, 'parallel_tool_calls', (v) => typeof v === 'boolean', 'parallel_tool_calls');
  // max_completion_tokens is the newer name of max_tokens; a request should use one of them.
  if (optionalInteger(body, 'max_tokens') !== undefined && optionalInteger(body, 'max_completion_tokens') !== undefined) {
    throw badField('max_completion_tokens', 'give max_tokens or max_completion_tokens, not both');
  }
  const field = body.max_completion_tokens !== undefined && body.max_completion_tokens !== null ? 'max_completion_tokens' : 'max_tokens';
  const prompt = served.encode(renderChat(chatMessages(body.messages)));
  const request = commonRequest(body, served, [prompt], field);
  request.stop = [...request.stop, CHAT_STOP];
  // As for completions: streamed pieces do not line up with tokens, so logprobs are not streamed.
  if (request.stream && logprobs) throw unsupported('logprobs', 'logprobs with stream');
  if (logprobs) request.logprobs = top ?? 0;
  return request;
}

function chatMessages(value: unknown): ChatMessage[] {
  if (value === undefined || value === null) throw badField('messages', 'messages is required', 'missing_required_parameter');
  if (!Array.isArray(value) || value.length === 0) throw badField('messages', `messages must be a non-empty list, got ${describe(value)}`, 'invalid_type');
  return value.map((m, i) => {
    const param = `messages[${i}]`;
    if (!isObject(m)) throw badField(param, `${param} must be an object, got ${describe(m)}`, 'invalid_type');
    for (const key of Object.keys(m)) {
      if (key !== 'role' && key !== 'content' && key !== 'name') throw badField(`${param}.${key}`, `${param}: unrecognized message field ${key}`, 'unknown_parameter');
    }
    const role = m.role === 'developer' ? 'system' : m.role;
    if (role === 'tool' || role === 'function') throw unsupported(`${param}.role`, `the "${role}" role (function calling)`);
    if (role !== 'system' && role !== 'user' && role !== 'assistant') {
      throw badField(`${param}.role`, `${param}.role must be "system", "developer", "user" or "assistant", got ${describe(m.role)}`);
    }
    return { role, content: messageText(m.content, `${param}.content`) };
  });
}

/** Content is a string or a list of text parts (images and audio are refused: the model reads text). */
function messageText(content: unknown, param: string): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw badField(param, `${param} must be a string or a list of text parts, got ${describe(content)}`, 'invalid_type');
  return content.map((part, i) => {
    if (!isObject(part)) throw badField(`${param}[${i}]`, `${param}[${i}] must be an object, got ${describe(part)}`, 'invalid_type');
    if (part.type !== 'text') throw unsupported(`${param}[${i}].type`, `content of type ${describe(part.type)} (this model reads text only)`);
    if (typeof part.text !== 'string') throw badField(`${param}[${i}].text`, `${param}[${i}].text must be a string`, 'invalid_type');
    return part.text;
  }).join('');
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
