import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { UserError } from '../util/errors.js';
import { looksLikeHubName, resolveHubModel, type HubOptions } from './hub.js';

/**
 * Where a model's tokenizer.json is: in its folder, or — for checkpoints that only name it, as the seed
 * model's config does with `tokenizer_name: EleutherAI/gpt-neox-20b` — in the hub cache, fetching
 * just the tokenizer files of that repository when they are missing.
 */
export async function tokenizerFileFor(folder: { dir: string; rawConfig: Record<string, unknown> }, options: HubOptions = {}): Promise<string> {
  const local = join(folder.dir, 'tokenizer.json');
  if (existsSync(local)) return local;
  const name = folder.rawConfig.tokenizer_name;
  if (typeof name === 'string' && looksLikeHubName(name)) {
    return join(await resolveHubModel(name, { ...options, files: 'tokenizer' }), 'tokenizer.json');
  }
  throw new UserError(`${folder.dir}: no tokenizer.json, and its config.json names no tokenizer_name to fetch one from`);
}
