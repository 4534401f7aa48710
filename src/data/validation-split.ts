import { hashString } from './hash.js';

/**
 * Whether a document is held out for validation: decided by a hash of its text alone, so the split
 * does not depend on file order, on how `--shard i/N` divided the inputs, or on the thread count,
 * and exact duplicates land on the same side.
 */
export function inValidation(text: string, valFraction: number): boolean {
  if (valFraction <= 0) return false;
  return hashString(text) / 4294967296 < valFraction;
}
