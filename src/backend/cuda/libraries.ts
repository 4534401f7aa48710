/**
 * Finding the CUDA shared libraries at run time (no build step at install). Search order, as
 * DESIGN.md asks: $CUDA_HOME (and $CUDA_PATH), each folder of $LD_LIBRARY_PATH, /usr/local/cuda,
 * the system library path (a bare soname lets the dynamic loader look), then pip's nvidia/*\/lib
 * folders of the Python installations we can see.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import koffi, { type LibraryHandle } from 'koffi';
import { UserError } from '../../util/errors.js';

export class CudaLibraryMissing extends UserError {
  constructor(name: string, tried: string[]) {
    super(`cannot load the CUDA library ${name}; tried ${tried.join(', ')}. ` +
      'Install the CUDA toolkit (or pip packages nvidia-*), or point CUDA_HOME or LD_LIBRARY_PATH at it');
    this.name = 'CudaLibraryMissing';
  }
}

/** Folders that may hold the CUDA toolkit's libraries, best first. */
export function libraryFolders(): string[] {
  const folders: string[] = [];
  for (const home of [process.env.CUDA_HOME, process.env.CUDA_PATH]) {
    if (home) folders.push(join(home, 'lib64'), join(home, 'lib'));
  }
  for (const dir of (process.env.LD_LIBRARY_PATH ?? '').split(':')) if (dir) folders.push(dir);
  folders.push('/usr/local/cuda/lib64', '/usr/local/cuda/lib');
  return [...new Set(folders)];
}

/** pip installs (nvidia-cublas-cu12, nvidia-cuda-nvrtc-cu12, …) put libraries in site-packages/nvidia/X/lib. */
function pipNvidiaFolders(): string[] {
  const roots = new Set<string>();
  for (const prefix of ['/usr/lib', '/usr/local/lib', `${process.env.HOME ?? ''}/.local/lib`]) {
    let entries: string[] = [];
    try { entries = readdirSync(prefix); } catch { continue; }
    for (const e of entries) if (/^python3/.test(e)) {
      for (const sub of ['site-packages', 'dist-packages']) roots.add(join(prefix, e, sub, 'nvidia'));
    }
  }
  if (process.env.VIRTUAL_ENV) roots.add(join(process.env.VIRTUAL_ENV, 'lib'));
  const out: string[] = [];
  for (const root of roots) {
    let entries: string[] = [];
    try { entries = readdirSync(root); } catch { continue; }
    for (const e of entries) {
      const lib = join(root, e, 'lib');
      if (existsSync(lib)) out.push(lib);
    }
  }
  return out;
}

const loaded = new Map<string, LibraryHandle>();

/**
 * Load the first of `sonames` found: full paths in the known folders first, then the bare name
 * through the system loader, then pip's folders. Throws CudaLibraryMissing naming every try.
 */
export function loadLibrary(label: string, sonames: string[]): LibraryHandle {
  const cached = loaded.get(label);
  if (cached) return cached;
  const tried: string[] = [];
  const candidates: string[] = [];
  for (const dir of libraryFolders()) for (const so of sonames) candidates.push(join(dir, so));
  candidates.push(...sonames);
  for (const dir of pipNvidiaFolders()) for (const so of sonames) candidates.push(join(dir, so));
  for (const path of candidates) {
    if (path.includes('/') && !existsSync(path)) continue;
    tried.push(path);
    try {
      const lib = koffi.load(path);
      loaded.set(label, lib);
      return lib;
    } catch {
      // try the next candidate
    }
  }
  throw new CudaLibraryMissing(label, tried.length ? tried : sonames);
}

/** The toolkit's include folder (for <cuda_bf16.h> in NVRTC), or null when none is found. */
export function cudaIncludeFolder(): string | null {
  const homes = [process.env.CUDA_HOME, process.env.CUDA_PATH, '/usr/local/cuda'].filter((h): h is string => !!h);
  for (const home of homes) if (existsSync(join(home, 'include', 'cuda_bf16.h'))) return join(home, 'include');
  for (const dir of [...libraryFolders(), ...pipNvidiaFolders()]) {
    const inc = join(dir, '..', 'include');
    if (existsSync(join(inc, 'cuda_bf16.h'))) return inc;
  }
  return null;
}
