import { promises as fs, openSync, writeSync, closeSync, fsyncSync, renameSync, rmSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';

/** A temporary name beside `path`, so that the final rename stays on one file system. */
export function temporaryPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
}

/** Write a whole file so that readers see the old file or the new one, never half of it. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = temporaryPathFor(path);
  try {
    await fs.writeFile(tmp, data);
    await fs.rename(tmp, path);
  } catch (error) {
    await fs.rm(tmp, { force: true });
    throw error;
  }
}

export function writeFileAtomicSync(path: string, chunks: Iterable<Uint8Array> | string): void {
  const tmp = temporaryPathFor(path);
  try {
    const fd = openSync(tmp, 'w');
    try {
      if (typeof chunks === 'string') writeSync(fd, chunks);
      else for (const chunk of chunks) writeSync(fd, chunk);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (error) {
    rmSync(tmp, { force: true });
    throw error;
  }
}
