/**
 * NVRTC: compile CUDA C++ for the device's own architecture at first use, and keep the cubin in a
 * disk cache keyed by the source's hash, the architecture, the options and NVRTC's version, under
 * the user's cache folder ($MPT_CACHE, else $XDG_CACHE_HOME/mpt-ts, else ~/.cache/mpt-ts).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomicSync } from '../../util/atomic.js';
import { cudaIncludeFolder, loadLibrary } from './libraries.js';

export class NvrtcError extends Error {
  constructor(readonly call: string, readonly code: number, meaning: string, readonly log = '') {
    super(`${call} failed: ${meaning} (nvrtcResult ${code})${log ? `\ncompile log:\n${log}` : ''}`);
    this.name = 'NvrtcError';
  }
}

type Fn = (...args: any[]) => any;
let fns: Record<string, Fn> | null = null;

function nvrtc(): Record<string, Fn> {
  if (fns) return fns;
  const lib = loadLibrary('libnvrtc', ['libnvrtc.so', 'libnvrtc.so.13', 'libnvrtc.so.12']);
  fns = {};
  for (const proto of [
    'int nvrtcVersion(_Out_ int *major, _Out_ int *minor)',
    'const char *nvrtcGetErrorString(int result)',
    'int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, void *headers, void *includeNames)',
    'int nvrtcCompileProgram(void *prog, int numOptions, const char **options)',
    'int nvrtcGetProgramLogSize(void *prog, _Out_ size_t *size)',
    'int nvrtcGetProgramLog(void *prog, void *log)',
    'int nvrtcGetCUBINSize(void *prog, _Out_ size_t *size)',
    'int nvrtcGetCUBIN(void *prog, void *cubin)',
    'int nvrtcDestroyProgram(_Inout_ void **prog)',
  ]) {
    const f = lib.func(proto);
    fns[f.info.name] = f;
  }
  return fns;
}

function check(call: string, code: number, log = ''): void {
  if (code !== 0) throw new NvrtcError(call, code, nvrtc().nvrtcGetErrorString(code) as string, log);
}

export function nvrtcVersion(): string {
  const major = [0], minor = [0];
  check('nvrtcVersion', nvrtc().nvrtcVersion(major, minor));
  return `${major[0]}.${minor[0]}`;
}

export function cacheFolder(): string {
  if (process.env.MPT_CACHE) return join(process.env.MPT_CACHE, 'kernels');
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'mpt-ts', 'kernels');
}

export interface CompileResult {
  cubin: Uint8Array;
  cached: boolean;
  millis: number;
}

/** Compile `source` for `arch` (e.g. 'sm_90a') with extra options; cubin from the cache when present. */
export function compile(name: string, source: string, arch: string, options: readonly string[] = []): CompileResult {
  const include = cudaIncludeFolder();
  const allOptions = [`--gpu-architecture=${arch}`, '--std=c++17', '-default-device', ...options];
  if (include) allOptions.push(`-I${include}`);
  const key = createHash('sha256')
    .update(source).update('\0').update(arch).update('\0').update(allOptions.join(' ')).update('\0').update(nvrtcVersion())
    .digest('hex').slice(0, 32);
  const dir = cacheFolder();
  const path = join(dir, `${name.replace(/[^A-Za-z0-9_.-]/g, '_')}-${key}.cubin`);
  if (existsSync(path)) {
    try {
      return { cubin: readFileSync(path), cached: true, millis: 0 };
    } catch {
      // unreadable cache entry: compile again
    }
  }
  const started = Date.now();
  const f = nvrtc();
  const prog: unknown[] = [null];
  check('nvrtcCreateProgram', f.nvrtcCreateProgram(prog, source, name, 0, null, null));
  try {
    const code = f.nvrtcCompileProgram(prog[0], allOptions.length, allOptions) as number;
    const size = [0];
    check('nvrtcGetProgramLogSize', f.nvrtcGetProgramLogSize(prog[0], size));
    const logBuf = Buffer.alloc(Math.max(1, Number(size[0])));
    check('nvrtcGetProgramLog', f.nvrtcGetProgramLog(prog[0], logBuf));
    const log = logBuf.toString('utf8').replace(/\0+$/, '').trim();
    check(`nvrtcCompileProgram(${name}, ${allOptions.join(' ')})`, code, log);
    const cubinSize = [0];
    check('nvrtcGetCUBINSize', f.nvrtcGetCUBINSize(prog[0], cubinSize));
    const cubin = Buffer.alloc(Number(cubinSize[0]));
    check('nvrtcGetCUBIN', f.nvrtcGetCUBIN(prog[0], cubin));
    try {
      mkdirSync(dir, { recursive: true });
      writeFileAtomicSync(path, [cubin]);
    } catch {
      // a read-only cache folder only costs a compile next time
    }
    return { cubin, cached: false, millis: Date.now() - started };
  } finally {
    f.nvrtcDestroyProgram(prog);
  }
}
