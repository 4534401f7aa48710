import { ApiError, badField, unsupported } from './api-error.js';

/**
 * Typed reads of a JSON request object. Each refusal names the field (OpenAI's `param`), so a client
 * can tell which of its arguments was wrong. JSON null counts as absent, as OpenAI's API treats it.
 */
export type Body = Record<string, unknown>;

export function asBody(value: unknown): Body {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ApiError(400, 'the request body must be a JSON object', 'invalid_request_error', null, 'invalid_json');
  }
  return value as Body;
}

/** Unknown fields are refused, not ignored: a misspelt `max_token` would otherwise silently do nothing. */
export function refuseUnknown(body: Body, known: readonly string[]): void {
  for (const name of Object.keys(body)) {
    if (!known.includes(name)) {
      throw new ApiError(400, `unrecognized request argument: ${name}`, 'invalid_request_error', name, 'unknown_parameter');
    }
  }
}

const present = (body: Body, name: string) => body[name] !== undefined && body[name] !== null;

export function optionalNumber(body: Body, name: string, range: { min?: number; max?: number; above?: number } = {}): number | undefined {
  if (!present(body, name)) return undefined;
  const value = body[name];
  if (typeof value !== 'number' || !Number.isFinite(value)) throw badField(name, `${name} must be a number, got ${describe(value)}`, 'invalid_type');
  if (range.min !== undefined && value < range.min) throw badField(name, `${name} must be ≥ ${range.min}, got ${value}`);
  if (range.above !== undefined && value <= range.above) throw badField(name, `${name} must be > ${range.above}, got ${value}`);
  if (range.max !== undefined && value > range.max) throw badField(name, `${name} must be ≤ ${range.max}, got ${value}`);
  return value;
}

export function optionalInteger(body: Body, name: string, range: { min?: number; max?: number } = {}): number | undefined {
  const value = optionalNumber(body, name, range);
  if (value !== undefined && !Number.isSafeInteger(value)) throw badField(name, `${name} must be an integer, got ${value}`, 'invalid_type');
  return value;
}

export function optionalBoolean(body: Body, name: string): boolean | undefined {
  if (!present(body, name)) return undefined;
  const value = body[name];
  if (typeof value !== 'boolean') throw badField(name, `${name} must be true or false, got ${describe(value)}`, 'invalid_type');
  return value;
}

export function optionalString(body: Body, name: string): string | undefined {
  if (!present(body, name)) return undefined;
  const value = body[name];
  if (typeof value !== 'string') throw badField(name, `${name} must be a string, got ${describe(value)}`, 'invalid_type');
  return value;
}

/** `stop`: a string or a list of strings (none empty: an empty stop string would end every reply at once). */
export function stopStrings(body: Body): string[] {
  if (!present(body, 'stop')) return [];
  const value = body.stop;
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || list.some((s) => typeof s !== 'string')) {
    throw badField('stop', `stop must be a string or a list of strings, got ${describe(value)}`, 'invalid_type');
  }
  if (list.some((s) => s === '')) throw badField('stop', 'stop strings must not be empty');
  return list as string[];
}

/** `stream_options: {include_usage}`: whether the last streamed chunk carries the usage counts. */
export function includeUsage(body: Body): boolean {
  if (!present(body, 'stream_options')) return false;
  const options = body.stream_options;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw badField('stream_options', `stream_options must be an object, got ${describe(options)}`, 'invalid_type');
  }
  for (const key of Object.keys(options)) {
    if (key !== 'include_usage') throw badField(`stream_options.${key}`, `unrecognized stream option: ${key}`, 'unknown_parameter');
  }
  return optionalBoolean(options as Body, 'include_usage') ?? false;
}

/**
 * OpenAI parameters this server does not implement are accepted only at their neutral value (so
 * clients that always send the defaults work) and refused by name otherwise.
 */
export function onlyNeutral(body: Body, name: string, isNeutral: (value: unknown) => boolean, what: string): void {
  if (present(body, name) && !isNeutral(body[name])) throw unsupported(name, what);
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value);
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${String(value)}`;
}
