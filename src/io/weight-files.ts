import { basename } from 'node:path';
import { FormatError } from '../util/errors.js';

/** Where a model folder's weights are, in the order we look for them (as transformers does). */
export const WEIGHT_FILES = ['model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', 'pytorch_model.bin.index.json'] as const;

/** A shard index (`*.index.json`): tensor name → shard file name, with the file names checked to stay in the folder. */
export function parseWeightIndex(indexPath: string, text: string): Map<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new FormatError(indexPath, `malformed JSON (${(error as Error).message})`);
  }
  const weightMap = (parsed as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) throw new FormatError(indexPath, 'has no weight_map object');
  const result = new Map<string, string>();
  for (const [tensor, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard !== basename(shard) || shard === '..' || shard === '.' || shard === '') {
      throw new FormatError(indexPath, `weight_map.${tensor} = ${JSON.stringify(shard)} is not a file name in this folder`);
    }
    result.set(tensor, shard);
  }
  if (result.size === 0) throw new FormatError(indexPath, 'weight_map is empty');
  return result;
}
