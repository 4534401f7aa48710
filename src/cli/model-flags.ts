import type { FlagSpec, Parsed } from './args.js';
import type { OpenOptions } from '../generate/open.js';
import type { DeviceChoice } from '../backend/select.js';
import type { WeightDType } from '../model/load.js';
import { UserError } from '../util/errors.js';

/** The flags every command that loads a model shares. */
export const MODEL_FLAG: Record<string, FlagSpec> = {
  model: { type: 'string', short: 'm', placeholder: 'M', description: 'Model folder (Hugging Face layout) or hub name, e.g. mosaicml/mpt-1b-redpajama-200b (default: the small demo model that ships with mpt-ts, models/mpt-demo).' },
};

export const DEVICE_FLAGS: Record<string, FlagSpec> = {
  device: { type: 'string', placeholder: 'D', default: 'auto', description: 'cpu, cuda, or auto (CUDA when a GPU is usable).' },
  dtype: { type: 'string', placeholder: 'T', description: 'CPU: weight storage float32|bfloat16 (default: as in the checkpoint). CUDA: compute bfloat16 (default) or float32 for checking.' },
  threads: { type: 'integer', placeholder: 'N', description: 'CPU threads (default: all cores).' },
};

export function openOptions(args: Parsed): OpenOptions {
  const dtype = args.flags.dtype as string | undefined;
  if (dtype !== undefined && dtype !== 'float32' && dtype !== 'bfloat16') throw new UserError(`--dtype must be float32 or bfloat16, got "${dtype}"`);
  return {
    model: args.flags.model as string | undefined,
    device: args.flags.device as DeviceChoice,
    dtype: dtype as WeightDType | undefined,
    threads: args.flags.threads as number | undefined,
    progress: Boolean(process.stderr.isTTY),
    onNote: (message) => process.stderr.write(`mpt: ${message}\n`),
  };
}

/** Read all of stdin as text (for prompts and tokenize when no text is given). */
export async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) throw new UserError('no text given: pass it as an argument or pipe it on stdin');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
