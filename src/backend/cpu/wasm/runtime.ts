import { TILE_SHAPES, tileName, type WeightKind } from './linear-module.js';

/**
 * This thread's instance of the generated kernels. The main thread installs it when it creates the
 * heap; a worker installs it from the module and memory the pool sends before its first wasm task.
 */
export type TileFunction = (x: number, w: number, out: number, groups: number, inWidth: number, outWidth: number, tiles: number) => void;

export interface Kernels {
  tile(kind: WeightKind, rows: number, cols: number): TileFunction;
}

let installed: Kernels | null = null;

export function installKernels(module: WebAssembly.Module, memory: WebAssembly.Memory): void {
  const exports = new WebAssembly.Instance(module, { env: { memory } }).exports;
  const byName = new Map<string, TileFunction>();
  for (const kind of ['bf16', 'f32'] as const) {
    for (const shape of TILE_SHAPES) byName.set(tileName(kind, shape), exports[tileName(kind, shape)] as TileFunction);
  }
  installed = {
    tile(kind, rows, cols) {
      const f = byName.get(tileName(kind, { rows, cols }));
      if (!f) throw new Error(`no generated kernel ${tileName(kind, { rows, cols })}`);
      return f;
    },
  };
}

export function kernels(): Kernels {
  if (!installed) throw new Error('the WebAssembly kernels are not installed on this thread');
  return installed;
}
