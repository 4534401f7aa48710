import type { Backend, DType, HostArray, Tensor } from '../backend/backend.js';
import { checkTensorsAgainst, type ModelFolder } from '../io/model-folder.js';
import { float16ToFloat32Array, float32ToBfloat16Array, bfloat16ToFloat32Array } from '../util/dtype.js';
import { Progress } from '../util/progress.js';
import { parameterShapes, type MptConfig } from './config.js';
import { MptModel } from './mpt.js';
import { structureParams } from './params.js';

export type WeightDType = 'float32' | 'bfloat16';

export interface LoadOptions {
  /** How weights are stored on the backend; default: bfloat16 checkpoints stay bfloat16, others float32. */
  dtype?: WeightDType;
  /** Show a progress bar (for big checkpoints). */
  progress?: boolean;
}

/**
 * Load a model folder onto a backend, one tensor at a time: each tensor's bytes are read, converted
 * and uploaded before the next is read, so host memory holds about one copy of the weights.
 */
export async function loadModel(folder: ModelFolder, backend: Backend, options: LoadOptions = {}): Promise<MptModel> {
  const shapes = parameterShapes(folder.config);
  checkTensorsAgainst(shapes, folder);
  const target = options.dtype ?? (folder.weightsDtype === 'bfloat16' ? 'bfloat16' : 'float32');
  const totalBytes = [...folder.tensors.values()].reduce((sum, s) => sum + byteLength(s.dtype, s.shape), 0);
  const progress = options.progress ? new Progress({ label: 'loading weights', total: totalBytes, unit: 'bytes' }) : null;
  const byName = new Map<string, Tensor>();
  for (const name of shapes.keys()) {
    const source = folder.tensors.get(name)!;
    const bytes = await source.read();
    byName.set(name, backend.upload(convert(bytes, source.dtype, target), source.shape, target));
    progress?.tick(bytes.length);
  }
  progress?.finish();
  return new MptModel(folder.config, backend, structureParams(folder.config, byName));
}

/** A model with the given weights already in memory (tests, random presets, training). */
export function modelFromTensors(config: MptConfig, backend: Backend, weights: Map<string, { data: HostArray; dtype: DType }>): MptModel {
  const shapes = parameterShapes(config);
  const byName = new Map<string, Tensor>();
  for (const [name, shape] of shapes) {
    const w = weights.get(name);
    if (!w) throw new Error(`weight ${name} is missing`);
    byName.set(name, backend.upload(w.data, shape, w.dtype));
  }
  return new MptModel(config, backend, structureParams(config, byName));
}

const byteLength = (dtype: string, shape: number[]) => shape.reduce((a, b) => a * b, 1) * (dtype === 'float32' ? 4 : 2);

/** Little-endian checkpoint bytes → the typed array the backend stores. */
function convert(bytes: Buffer, from: string, to: WeightDType): Float32Array | Uint16Array {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : Buffer.from(bytes);
  if (from === 'float32') {
    const f32 = new Float32Array(aligned.buffer, aligned.byteOffset, aligned.length / 4);
    return to === 'float32' ? f32 : float32ToBfloat16Array(f32);
  }
  const bits = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.length / 2);
  if (from === 'bfloat16') return to === 'bfloat16' ? bits : bfloat16ToFloat32Array(bits);
  if (from === 'float16') {
    const f32 = float16ToFloat32Array(bits);
    return to === 'float32' ? f32 : float32ToBfloat16Array(f32);
  }
  throw new Error(`cannot convert ${from} weights`);
}
