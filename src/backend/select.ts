import { UserError } from '../util/errors.js';
import type { Backend } from './backend.js';
import { CpuBackend } from './cpu/index.js';

export type DeviceChoice = 'cpu' | 'cuda' | 'auto';

export interface BackendChoice {
  backend: Backend;
  /** Why this backend was chosen, for `auto` (e.g. "no GPU found: running on the CPU"). */
  note?: string;
}

export interface BackendOptions {
  device: DeviceChoice;
  /** CUDA only: the activation dtype (float32 for checking against the CPU). */
  cudaDType?: 'bfloat16' | 'float32';
  threads?: number;
}

/**
 * The backend a command runs on. CUDA is imported only when asked for or probed, so CPU-only use never
 * loads the FFI or the CUDA libraries.
 */
export async function selectBackend(options: BackendOptions): Promise<BackendChoice> {
  const device = options.device;
  if (!['cpu', 'cuda', 'auto'].includes(device)) throw new UserError(`--device must be cpu, cuda or auto, got "${device}"`);
  if (device === 'cpu') return { backend: new CpuBackend({ threads: options.threads }) };
  const cuda = await loadCuda();
  const available = cuda.cudaAvailable();
  if (available.ok) {
    return { backend: new cuda.CudaBackend({ dtype: options.cudaDType ?? 'bfloat16' }), note: device === 'auto' ? 'running on CUDA' : undefined };
  }
  if (device === 'cuda') throw new UserError(`--device cuda: no usable GPU (${available.reason})`);
  // The first clause of the reason is enough here; --device cuda shows all of it.
  const why = (available.reason ?? 'unknown').split(/[;.]/)[0];
  return { backend: new CpuBackend({ threads: options.threads }), note: `no usable GPU (${why}): running on the CPU` };
}

/** The CUDA backend module, or a stand-in that says why it could not load (no koffi build, say). */
async function loadCuda(): Promise<Pick<typeof import('./cuda/index.js'), 'cudaAvailable' | 'CudaBackend'>> {
  try {
    return await import('./cuda/index.js');
  } catch (error) {
    const reason = `the CUDA backend failed to load: ${(error as Error).message}`;
    return { cudaAvailable: () => ({ ok: false, reason }), CudaBackend: undefined as never };
  }
}
