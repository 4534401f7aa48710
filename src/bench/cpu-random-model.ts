import type { Backend, Tensor } from '../backend/backend.js';
import { elementCount } from '../backend/backend.js';
import { CpuBackend } from '../backend/cpu/index.js';
import { asCpu } from '../backend/cpu/tensor.js';
import { parameterShapes, type MptConfig } from '../model/config.js';
import { MptModel } from '../model/mpt.js';
import { structureParams } from '../model/params.js';
import { float32ToBfloat16Bits } from '../util/dtype.js';
import { Rng } from '../util/random.js';

/**
 * A model of `config` with random bfloat16 weights, built directly in the backend's storage: no float32
 * copy of the weights ever exists, so a benchmark's resident memory is the bf16 weights plus what
 * inference itself needs (2.62 GB for the 1.3B preset). On the CPU backend each tensor is filled in
 * place; another backend gets one host tensor at a time through `upload`.
 *
 * Values: matrices and embeddings draw from N(0, std²), LayerNorm weights are 1, biases 0 — the shape
 * of a trained model's numbers, so the arithmetic is typical, while the tokens produced mean nothing.
 * Drawing 1.3 billion normals one by one is slow in JavaScript, so a table of 65536 normal draws is
 * made once and every weight is an entry picked by 16 random bits (two weights per 32-bit draw).
 */
export interface RandomModelOptions {
  seed?: number;
  std?: number;
}

export function randomBf16Model(config: MptConfig, backend: Backend, options: RandomModelOptions = {}): MptModel {
  const rng = new Rng(options.seed ?? 1);
  const std = options.std ?? 0.02;
  const table = Uint16Array.from({ length: 65536 }, () => float32ToBfloat16Bits(std * rng.normal()));
  const ONE = float32ToBfloat16Bits(1);

  const byName = new Map<string, Tensor>();
  for (const [name, shape] of parameterShapes(config)) {
    const fill = (bits: Uint16Array) => {
      if (name.endsWith('.bias')) bits.fill(0);
      else if (shape.length === 1) bits.fill(ONE); // LayerNorm weights
      else fillFromTable(bits, table, rng.nextUint32() | 1);
    };
    if (backend instanceof CpuBackend) {
      const t = backend.zeros(shape, 'bfloat16');
      fill(asCpu(t).data as Uint16Array);
      byName.set(name, t);
    } else {
      const host = new Uint16Array(elementCount(shape));
      fill(host);
      byName.set(name, backend.upload(host, shape, 'bfloat16'));
    }
  }
  return new MptModel(config, backend, structureParams(config, byName));
}

/** Two table entries per step of xorshift32 (Marsaglia), inlined: the Rng class is ~5× slower here. */
function fillFromTable(bits: Uint16Array, table: Uint16Array, seed: number): void {
  let s = seed >>> 0 || 1;
  const n = bits.length;
  for (let i = 0; i < n; i += 2) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    bits[i] = table[s & 0xffff];
    if (i + 1 < n) bits[i + 1] = table[(s >>> 16) & 0xffff];
  }
}
