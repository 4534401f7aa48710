import { parseArgs } from 'node:util';
import { UserError } from '../util/errors.js';

/**
 * Declarative flags for one command: parsing, validation and the --help text come from one table,
 * so a flag cannot be documented differently from how it behaves.
 */
export interface FlagSpec {
  /** `strings`: a string flag that may be given several times, collected into an array. */
  type: 'string' | 'strings' | 'number' | 'integer' | 'boolean' | 'ids';
  description: string;
  default?: string | number | boolean;
  short?: string;
  /** Shown in --help for string flags: the placeholder, e.g. DIR. */
  placeholder?: string;
}

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  /** Free text after the flag table: examples, notes. */
  details?: string;
  /** Whether the command takes arguments besides its flags (its usage line names them); others refuse any. */
  positionals?: boolean;
  flags: Record<string, FlagSpec>;
}

export type FlagValue = string | string[] | number | boolean | number[] | undefined;

export interface Parsed {
  flags: Record<string, FlagValue>;
  positionals: string[];
  help: boolean;
}

const COMMON_FLAGS: Record<string, FlagSpec> = {
  help: { type: 'boolean', short: 'h', description: 'Show this help and exit.' },
  debug: { type: 'boolean', description: 'Show stack traces on errors.' },
};

export function parseCommand(spec: CommandSpec, argv: string[]): Parsed {
  const all = { ...spec.flags, ...COMMON_FLAGS };
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [name, flag] of Object.entries(all)) {
    options[name] = {
      type: flag.type === 'boolean' ? 'boolean' : 'string',
      ...(flag.short ? { short: flag.short } : {}),
      ...(flag.type === 'strings' ? { multiple: true } : {}),
    };
  }
  let raw;
  try {
    raw = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    const message = (error as Error).message.replace(/\. To specify a positional argument.*$/s, '');
    throw new UserError(`mpt ${spec.name}: ${message} (see mpt ${spec.name} --help)`);
  }
  if (!spec.positionals && raw.positionals.length > 0) {
    throw new UserError(`mpt ${spec.name}: unexpected argument "${raw.positionals[0]}": it takes flags only (usage: ${spec.usage})`);
  }
  const flags: Record<string, FlagValue> = {};
  for (const [name, flag] of Object.entries(all)) {
    const value = (raw.values as Record<string, string | string[] | boolean | undefined>)[name];
    if (Array.isArray(value)) { flags[name] = value; continue; }
    flags[name] = value === undefined ? flag.default : convert(spec.name, name, flag, value);
  }
  return { flags, positionals: raw.positionals, help: Boolean(flags.help) };
}

function convert(command: string, name: string, flag: FlagSpec, value: string | boolean): FlagValue {
  const bad = (what: string) => new UserError(`mpt ${command}: --${name} ${what}, got "${value}"`);
  switch (flag.type) {
    case 'boolean':
    case 'string':
    case 'strings':
      return value;
    case 'number': {
      const n = Number(value);
      if (value === '' || !Number.isFinite(n)) throw bad('must be a number');
      return n;
    }
    case 'integer': {
      const n = Number(value);
      if (value === '' || !Number.isInteger(n)) throw bad('must be an integer');
      return n;
    }
    case 'ids':
      return parseIds(String(value), `--${name}`);
  }
}

/** "1,2,3" → [1, 2, 3]; anything else is a clear error. */
export function parseIds(text: string, what: string): number[] {
  const parts = text.split(/[\s,]+/).filter((p) => p !== '');
  if (parts.length === 0) throw new UserError(`${what}: expected comma-separated token ids, got "${text}"`);
  return parts.map((p) => {
    const n = Number(p);
    if (!Number.isInteger(n) || n < 0) throw new UserError(`${what}: "${p}" is not a token id (a non-negative integer)`);
    return n;
  });
}

export function helpText(spec: CommandSpec): string {
  const lines = [`mpt ${spec.name} — ${spec.summary}`, '', `Usage: ${spec.usage}`, '', 'Options:'];
  const all = { ...spec.flags, ...COMMON_FLAGS };
  const left = (name: string, f: FlagSpec) =>
    `${f.short ? `-${f.short}, ` : '    '}--${name}${f.type === 'boolean' ? '' : ` ${f.placeholder ?? f.type.toUpperCase()}`}`;
  const pad = Math.max(...Object.entries(all).map(([n, f]) => left(n, f).length)) + 2;
  for (const [name, flag] of Object.entries(all)) {
    const def = flag.default !== undefined && flag.type !== 'boolean' ? ` (default: ${flag.default})` : '';
    lines.push(`  ${left(name, flag).padEnd(pad)}${flag.description}${def}`);
  }
  if (spec.details) lines.push('', spec.details.trim());
  return lines.join('\n') + '\n';
}
