import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * The model that ships in the repository (models/mpt-demo): a 7.6M-parameter MPT with the seed
 * model's architecture, trained by mpt-ts itself on the demo corpus. It makes `mpt generate "…"`
 * work on a fresh clone with no download; its model card says how it was made.
 */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL('../../../models/mpt-demo/', import.meta.url));

export const hasDefaultModel = (): boolean => existsSync(DEFAULT_MODEL_DIR);
