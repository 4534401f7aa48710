import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';

/**
 * A Hugging Face cache folder as huggingface_hub lays it out (`models--ORG--NAME/refs/main` naming a
 * commit, `snapshots/COMMIT/FILE`), holding copies of `files` for `repo`: what a loader finds offline.
 * Returns the snapshot folder.
 */
export function hubCacheWith(cacheDir: string, repo: string, files: string[], commit = 'c'.repeat(40)): string {
  const [org, name] = repo.split('/');
  const repoDir = join(cacheDir, `models--${org}--${name}`), snapshot = join(repoDir, 'snapshots', commit);
  mkdirSync(snapshot, { recursive: true });
  mkdirSync(join(repoDir, 'refs'), { recursive: true });
  writeFileSync(join(repoDir, 'refs', 'main'), commit);
  for (const f of files) copyFileSync(f, join(snapshot, basename(f)));
  return snapshot;
}
