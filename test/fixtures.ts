import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project's root (tests run from dist/test, so walk up to package.json). */
export const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The reference fixtures made with the original code: ../shared/fixtures, or $MPT_FIXTURES. */
export const fixturesDir = process.env.MPT_FIXTURES ?? resolve(projectRoot, '..', 'shared', 'fixtures');

export function fixture(...parts: string[]): string {
  const path = join(fixturesDir, ...parts);
  if (!existsSync(path)) throw new Error(`fixture ${path} is missing (set MPT_FIXTURES to the fixtures folder)`);
  return path;
}
