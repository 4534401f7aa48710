// What the CUDA twin tests share: the skip reason where no GPU is usable, one CUDA backend per
// compute dtype, the CPU reference backend, fresh random inputs every run, and relative-error checks.
import { after } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { cudaAvailable, CudaBackend } from '../src/backend/cuda/index.js';
import { trainingBackend, type Backend, type Tensor } from '../src/backend/backend.js';
import { bfloat16ToFloat32Array, float32ToBfloat16Array } from '../src/util/dtype.js';
import { Rng } from '../src/util/random.js';
import { GELU_TABLE_SHAPE, type GeluTableShape } from '../src/backend/cuda/gelu-table.js';

const available = cudaAvailable();
export const skip = available.ok ? false : `no CUDA here: ${available.reason}`;
export const cpu = trainingBackend(new CpuBackend({ threads: 2 }));

const backends = new Map<string, CudaBackend>();
export const cudaFor = (dtype: 'bfloat16' | 'float32') => {
  let be = backends.get(dtype);
  if (!be) backends.set(dtype, be = new CudaBackend({ dtype }));
  return be;
};
after(() => { for (const be of backends.values()) be.synchronize(); });

export const rng = new Rng(Date.now() >>> 0); // fresh inputs every run
export const randn = (n: number, scale = 1) => Float32Array.from({ length: n }, () => rng.normal() * scale);
/** The values the GPU will see: bf16-rounded when it computes in bf16. */
export const asStored = (x: Float32Array, dtype: string) => (dtype === 'bfloat16' ? bfloat16ToFloat32Array(float32ToBfloat16Array(x)) : x);

/**
 * ‖got − want‖ / ‖want‖, asserting every element is finite — or, with `equalInfinities`, an
 * infinity equal to the reference's (a fully masked row's log-sum-exp).
 */
export function relErr(got: ArrayLike<number>, want: ArrayLike<number>, equalInfinities = false): number {
  assert.equal(got.length, want.length, 'lengths differ');
  let num = 0, den = 0;
  for (let i = 0; i < got.length; i++) {
    const same = equalInfinities && got[i] === want[i];
    assert.ok(Number.isFinite(got[i]) || same, `element ${i} is ${got[i]} (want ${want[i]})`);
    if (same) continue;
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

export function close(what: string, got: ArrayLike<number>, want: ArrayLike<number>, tolerance: number, equalInfinities = false) {
  const e = relErr(got, want, equalInfinities);
  if (!(e <= tolerance)) assert.fail(`${what}: relative error ${e.toExponential(3)} > ${tolerance}; ${whereOff(got, want)}`);
}

/** Asserts two float arrays hold the same bits, element for element (NaN payloads and zero signs included). */
export function sameBits(what: string, got: Float32Array, want: Float32Array) {
  assert.equal(got.length, want.length, `${what}: lengths differ`);
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length), b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  let differ = 0, first = -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) { differ++; if (first < 0) first = i; }
  if (differ) assert.fail(`${what}: ${differ} of ${a.length} elements differ, first [${first}] ${got[first]} vs ${want[first]}`);
}

/**
 * Launch shapes of the GELU table kernels the twins run (gelu-table.ts): the default, one warp a block,
 * four vectors a turn in reverse, three a turn (vector counts no multiple of a turn's).
 */
export const GELU_TABLE_TEST_SHAPES: GeluTableShape[] = [{ ...GELU_TABLE_SHAPE }, { threads: 32, unroll: 1, blocksPerSM: 1, reverse: false },
  { threads: 64, unroll: 4, blocksPerSM: 1, reverse: true }, { threads: 512, unroll: 3, blocksPerSM: 2, reverse: true }];

/** ALiBi slopes of `heads` heads as the tests use them: 2^(−8(h + 1)/heads) (MPT's with alibi_bias_max 8). */
export const alibiSlopesFor = (heads: number) => Float32Array.from({ length: heads }, (_, h) => 2 ** (-8 * (h + 1) / heads));

/** Columns [c·n, (c + 1)·n) of a row-major [rows, blocks·n] array, as a [rows, n] array. */
export function columnBlock(all: Float32Array, rows: number, n: number, c: number, blocks = 3): Float32Array {
  return Float32Array.from({ length: rows * n }, (_, i) => all[Math.floor(i / n) * blocks * n + c * n + (i % n)]);
}

/** Where two arrays part (for a failure message): how many elements are far off, the first and the worst. */
function whereOff(got: ArrayLike<number>, want: ArrayLike<number>): string {
  let sq = 0;
  for (let i = 0; i < want.length; i++) sq += want[i] ** 2;
  const rms = Math.sqrt(sq / Math.max(want.length, 1));
  let far = 0, first = -1, worst = 0;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= 0.1 * (Math.abs(want[i]) + rms))) { far++; if (first < 0) first = i; }
    if (!(d <= Math.abs(got[worst] - want[worst]))) worst = i;
  }
  const at = (i: number) => `[${i}] ${got[i]} vs ${want[i]}`;
  return `${far} of ${got.length} elements off by over 10% (first ${first < 0 ? 'none' : at(first)}), worst ${at(worst)}`;
}

/** The same float data on both backends (bf16-rounded first for a bf16 GPU); the CPU always float32. */
export function pair(be: CudaBackend, x: Float32Array, shape: number[]): [Tensor, Tensor] {
  const v = asStored(x, be.activationDType);
  return [be.upload(v, shape, be.activationDType), cpu.upload(v, shape, 'float32')];
}

export const down = (be: Backend, t: Tensor) => be.download(t) as Float32Array;
