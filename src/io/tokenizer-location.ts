import { existsSync, statSync } from 'node:fs';
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

/**
 * The tokenizer.json of a tokenizer named by `--tokenizer` or a YAML's `tokenizer.name`: the file itself,
 * the one in a folder, or for a hub name (EleutherAI/gpt-neox-20b, the seed model's tokenizer) the one in
 * the Hugging Face cache, fetched there with its companion files when missing.
 */
export async function tokenizerFile(pathOrHubName: string, options: HubOptions = {}): Promise<string> {
  if (existsSync(pathOrHubName)) {
    if (!statSync(pathOrHubName).isDirectory()) return pathOrHubName;
    const file = join(pathOrHubName, 'tokenizer.json');
    if (!existsSync(file)) throw new UserError(`${pathOrHubName} has no tokenizer.json`);
    return file;
  }
  if (looksLikeHubName(pathOrHubName)) return join(await resolveHubModel(pathOrHubName, { ...options, files: 'tokenizer' }), 'tokenizer.json');
  throw new UserError(`tokenizer ${pathOrHubName} does not exist (a tokenizer.json, a model folder, or a hub name such as EleutherAI/gpt-neox-20b)`);
}
