/**
 * Errors a person can act on. The CLI prints `message` on one line and exits non-zero; a stack trace
 * only with --debug. Anything that is not a UserError is a bug in mpt-ts and is shown in full.
 */
export class UserError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UserError';
  }
}

/** A file that exists but cannot be read as what it claims to be (truncated, corrupt, wrong format). */
export class FormatError extends UserError {
  constructor(readonly file: string, problem: string) {
    super(`${file}: ${problem}`);
    this.name = 'FormatError';
  }
}

/** A configuration (config.json, a YAML, a flag) that is missing a field or asks for what we cannot run. */
export class ConfigError extends UserError {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}
