/**
 * The kernels of kernels/*.cu: each file is compiled by NVRTC (with kernels/common.cuh in front) for
 * the device's architecture and a set of defines (the storage type, the head size), loaded once per
 * context and cached. The argument kinds of every kernel are listed here, next to their C signatures'
 * order: p pointer, i int32, u uint32, f float32, q 64-bit integer, m a 128-byte tensor map passed by value
 * (tensor-map.ts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile } from './nvrtc.js';
import { Kernel, loadModule, moduleFunction, type CudaContext } from './driver.js';

export const KERNEL_ARGS: Record<string, string> = {
  f32_to_t: 'ppq', t_to_f32: 'ppq', bf16_to_t: 'ppq', add: 'pppq', scale: 'ppfq', clamp: 'ppfq', gelu: 'ppq', gelu_bf16x8: 'ppq', gelu_table8: 'ppqp', gelu_table_build: 'p',
  columns: 'ppiiii', gather_rows: 'pppiiip', gather_rows_f32: 'pppiiip', write_rows: 'ppiiiipi', advance: 'pi',
  layernorm: 'pppppif', layernorm8: 'pppppif', layernorm_stats8: 'pppppif', layernorm_rows8: 'ppppiif',
  qkv_split: 'ppppppppiiipifif', qkv_split8: 'ppppppppiiipifif',
  flash_backward_dq_fa3: 'pppiiif',
  attention_decode: 'pppppppiiipiiiif', attention_combine: 'ppiiii', attention_decode_qkv: 'pppppppppppppiiipiffi',
  flash_forward: 'pppppppiiiiiiif', flash_forward_persistent: 'pppppppiiiiiiifi', flash_forward_tma: 'pppppppiiiiiiifimmm', flash_backward_dq: 'pppppppppif', flash_backward_dkdv: 'pppppppppppif',
  flash_backward_dq_stored: 'pppiif', flash_backward_dkdv_wgmma: 'pppppppppppif', flash_backward_dkdv_fa3: 'pppppppppppif', flash_backward_dkdv_fa3_tma: 'pppppppppppifmmmm', flash_backward_dq_wgmma: 'pppiif',
  attention_row_dot: 'pppiiii', attention_row_dot8: 'pppiiiii',
  fill_normal: 'pqqff', skinny_gemm: 'ppppiiiiippfppfpp', argmax_rows: 'ppii', sample_rows: 'ppiififqpi',
};

/**
 * Kernels that begin with griddepcontrol.wait (pdl_wait in common.cuh) before they read or write
 * anything an earlier kernel touches, in every thread: only these may be launched with programmatic
 * dependent launch (a kernel without the wait could run ahead of the one it depends on). They also
 * call pdl_trigger, so the kernel after them can be scheduled early. The decode step uses only these,
 * but for its first kernel: gather_rows_f32 (the embedding) is left out on purpose, so that it starts
 * only once everything before it in the stream has finished — the previous step included. The kernels
 * of a step may then read, before their own wait, what earlier steps wrote (decode_attention.cu loads
 * the cached keys under the QKV GEMM).
 */
export const DEPENDENT_LAUNCH = new Set([
  'gather_rows', 'scale', 'advance', 'layernorm', 'layernorm8', 'layernorm_stats8', 'layernorm_rows8', 'qkv_split', 'qkv_split8',
  'attention_decode', 'attention_combine', 'attention_decode_qkv', 'skinny_gemm', 'argmax_rows', 'sample_rows',
]);

/** The folder of the .cu sources: $MPT_KERNELS, else src/backend/cuda/kernels of this package. */
export function kernelFolder(): string {
  if (process.env.MPT_KERNELS) return process.env.MPT_KERNELS;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'src', 'backend', 'cuda', 'kernels');
    const here = join(dir, 'kernels', 'common.cuh');
    if (existsSync(here)) return join(dir, 'kernels');
    dir = resolve(dir, '..');
  }
  throw new Error('cannot find the CUDA kernel sources (src/backend/cuda/kernels); set MPT_KERNELS');
}

export function architecture(ctx: CudaContext): string {
  const { major, minor } = ctx.device;
  // sm_90a unlocks Hopper-only instructions; other chips get their plain target.
  return major === 9 && minor === 0 ? 'sm_90a' : `sm_${major}${minor}`;
}

/**
 * A kernel source with each `#include "NAME.cuh"` line replaced by that header of the kernel folder
 * (one level, the headers themselves include nothing of the folder): NVRTC gets one text, and the disk
 * cache's key (the hash of that text) changes when a header does.
 */
export function spliceHeaders(dir: string, file: string, text: string): string {
  return text.replace(/^#include "([A-Za-z0-9_]+\.cuh)"[ \t]*(?:\/\/.*)?$/gm, (_line, header: string, offset: number) => {
    const next = text.slice(0, offset).split('\n').length + 1;
    return `#line 1 "${header}"\n${readFileSync(join(dir, header), 'utf8')}\n#line ${next} "${file}"`;
  });
}

/**
 * The text NVRTC compiles for a kernel file of `dir`: common.cuh, then the file with its headers
 * spliced in, #line markers keeping error positions (bench/tools/compile-kernels.sh compiles the same).
 */
export function kernelSource(file: string, dir = kernelFolder()): string {
  return '#line 1 "common.cuh"\n' + readFileSync(join(dir, 'common.cuh'), 'utf8') + '\n#line 1 "' + file + '"\n'
    + spliceHeaders(dir, file, readFileSync(join(dir, file), 'utf8'));
}

export class KernelCache {
  private readonly modules = new Map<string, number>();
  private readonly kernels = new Map<string, Kernel>();
  /** Milliseconds spent compiling (not cached on disk) in this process. */
  compileMillis = 0;

  constructor(private readonly ctx: CudaContext) {}

  /** The target the kernels are compiled for ('sm_90a' on H100): launchers pick kernels by it. */
  architecture(): string {
    return architecture(this.ctx);
  }

  /** Streaming multiprocessors of the device the kernels run on (persistent grids size themselves by it). */
  multiprocessors(): number {
    return this.ctx.device.multiprocessors;
  }

  /**
   * Defines added to every kernel compiled from now on (benchmark variants); starts from
   * $MPT_CUDA_DEFINES, comma-separated names (e.g. PDL_GEMM_LATE,PDL_TRIGGER_LATE).
   */
  globalDefines: Record<string, string | number | boolean> = Object.fromEntries(
    (process.env.MPT_CUDA_DEFINES ?? '').split(',').map((x) => x.trim()).filter((x) => /^[A-Z_][A-Z0-9_]*$/.test(x)).map((x) => [x, true]));

  get(file: string, name: string, defines: Record<string, string | number | boolean>): Kernel {
    const defs = Object.entries({ ...this.globalDefines, ...defines }).filter(([, v]) => v !== false)
      .map(([k, v]) => (v === true ? `-D${k}` : `-D${k}=${v}`)).sort();
    const kernelKey = `${file}:${name}:${defs.join(' ')}`;
    const found = this.kernels.get(kernelKey);
    if (found) return found;
    const moduleKey = `${file}:${defs.join(' ')}`;
    let module = this.modules.get(moduleKey);
    if (module === undefined) {
      const result = compile(file, kernelSource(file), architecture(this.ctx), [...defs, '-lineinfo']);
      this.compileMillis += result.millis;
      module = loadModule(result.cubin);
      this.modules.set(moduleKey, module);
    }
    const kinds = KERNEL_ARGS[name];
    if (!kinds) throw new Error(`kernel ${name} has no argument list in KERNEL_ARGS`);
    const kernel = new Kernel(this.ctx, name, moduleFunction(module, name), kinds, DEPENDENT_LAUNCH.has(name));
    this.kernels.set(kernelKey, kernel);
    return kernel;
  }
}
