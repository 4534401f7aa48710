/**
 * The GEMM algorithms that tuning chose (cublaslt-api.ts `LtHandle.choose`), kept on disk beside the
 * compiled kernels, one JSON file per device name and cuBLASLt version. Timing decides a choice, so two
 * processes that tuned for themselves could pick different algorithms and differ in the last bits of
 * their results; reading the first process's choice back makes every later run on this machine take the
 * same algorithms (a resumed training run computes as the run it resumes), and tunes each shape once.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { writeFileAtomicSync } from '../../util/atomic.js';
import { cacheFolder } from './nvrtc.js';

export class GemmChoices {
  private readonly choices = new Map<string, string>();

  constructor(private readonly file: string) {
    try {
      const stored = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
      for (const [key, hex] of Object.entries(stored)) if (typeof hex === 'string') this.choices.set(key, hex);
    } catch {
      // no file yet, or an unreadable one: shapes are tuned again and the file rewritten
    }
  }

  /** The stored algorithm for a shape key, if any (its 64 bytes). */
  get(key: string): Buffer | undefined {
    const hex = this.choices.get(key);
    return hex === undefined ? undefined : Buffer.from(hex, 'hex');
  }

  /** Remember a choice and rewrite the file (temporary file, then rename); a read-only cache only costs tuning next time. */
  set(key: string, algo: Buffer): void {
    this.choices.set(key, algo.toString('hex'));
    try {
      mkdirSync(dirname(this.file), { recursive: true });
      writeFileAtomicSync(this.file, JSON.stringify(Object.fromEntries(this.choices), null, 1));
    } catch {
      // kept for this process only
    }
  }
}

/** The choices file for one device and cuBLASLt version: <cache>/gemm/<device>-<version>.json. */
export function gemmChoicesFile(deviceName: string, cublasLtVersion: number): string {
  const device = deviceName.replace(/[^A-Za-z0-9._-]+/g, '_');
  return join(dirname(cacheFolder()), 'gemm', `${device}-cublasLt${cublasLtVersion}.json`);
}
