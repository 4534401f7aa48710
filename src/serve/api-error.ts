/**
 * Errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}` with an HTTP status.
 * OpenAI's client libraries read `error.message` and the status to raise their typed errors
 * (BadRequestError, NotFoundError, …), so both must be right for a client to act on them.
 */
export type ApiErrorType = 'invalid_request_error' | 'authentication_error' | 'not_found_error' | 'server_error' | 'service_unavailable';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ApiErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  toJSON(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** A request field that is missing, of the wrong type, or out of range. */
export const badField = (param: string, message: string, code: string | null = 'invalid_value') =>
  new ApiError(400, message, 'invalid_request_error', param, code);

/** A feature of the OpenAI API this server does not implement, refused by name rather than ignored. */
export const unsupported = (param: string, what: string) =>
  new ApiError(400, `${what} is not supported by this server`, 'invalid_request_error', param, 'unsupported_parameter');
