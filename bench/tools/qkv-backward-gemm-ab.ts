// The Wqkv backward's GEMMs alone at the mpt-1b step's shape (bf16, 16384 rows = microbatch 8 × 2048,
// d 2048): three GEMMs over Wqkv's row blocks (dq, dk, dv as tensors of their own) against one over the
// fused Wqkv with dQKV [rows, 3d] (backward.ts, the fused path). Median ms a call over CUDA events after
// a warm-up, and the results of one against the other (the same dq, dk, dv: copied exactly out of dQKV).
//   dLn1Out = dq·Wq + dk·Wk + dv·Wv: three NN 16384×2048×2048 (the 2nd and 3rd accumulating) vs one NN 16384×2048×6144
//   dWqkv = [dq; dk; dv]ᵀ·LN_1(x) → float32, written: three TN 2048×2048×16384 vs one TN 6144×2048×16384
// `node dist/bench/tools/qkv-backward-gemm-ab.js`
import { CudaBackend } from '../../src/backend/cuda/index.js';
import { medianMs, randomOnDevice, relErr } from './device-tools.js';
import type { CudaTensor } from '../../src/backend/cuda/tensor.js';
import type { GemmArgs } from '../../src/backend/cuda/training-gemm.js';

const rows = 16384, d = 2048, es = 2;
const be = new CudaBackend({ dtype: 'bfloat16' });
const gemm = (g: Omit<GemmArgs, 'inType' | 'outType' | 'alpha'> & { outType?: GemmArgs['outType'] }) =>
  be.training.gemm.gemm({ alpha: 1, inType: 'bfloat16', outType: 'bfloat16', ...g });
let seed = 5;
const random = (shape: number[], std: number): CudaTensor => randomOnDevice(be, shape, seed++, 0, std);
const time = (fn: () => void, reps = 30): number => medianMs(be, fn, reps);
const down = (t: CudaTensor) => be.download(t) as Float32Array;
const flops = 3 * 2 * rows * d * d;
const line = (what: string, ms: number, extra = '') => console.log(`  ${what.padEnd(52)} ${ms.toFixed(4)} ms  ${(flops / ms / 1e9).toFixed(0)} TFLOP/s${extra}`);

const dQkv = random([rows, 3 * d], 1e-3), ln1Out = random([rows, d], 1), wqkv = random([3 * d, d], 0.02);
// dq, dk, dv = dQKV's column blocks, copied exactly: dQKV · S_i with S_i [3d, d] the identity at rows i·d
// (one product of a bf16 value and 1 a sum), S_i a window of Z = [0; 0; I; 0; 0] [5d, d].
const z = new Float32Array(5 * d * d);
for (let i = 0; i < d; i++) z[(2 * d + i) * d + i] = 1;
const zDev = be.upload(z, [5 * d, d], 'bfloat16') as CudaTensor;
const parts = [0, 1, 2].map((i) => {
  const part = be.alloc([rows, d]);
  gemm({ m: rows, n: d, k: 3 * d, a: dQkv.ptr, aTrans: false, b: zDev.ptr + (2 - i) * d * d * es, bTrans: false, c: part.ptr, beta: 0 });
  return part;
});
be.release(zDev);
be.synchronize();

console.log(`dLn1Out = dQKV·Wqkv, bf16 dQKV [${rows}, ${3 * d}], Wqkv [${3 * d}, ${d}]`);
const dxThree = be.alloc([rows, d]), dxOne = be.alloc([rows, d]);
const nnThree = () => parts.forEach((p, i) => gemm({ m: rows, n: d, k: d, a: p.ptr, aTrans: false, b: wqkv.ptr + i * d * d * es, bTrans: false, c: dxThree.ptr, beta: i === 0 ? 0 : 1 }));
const nnOne = () => gemm({ m: rows, n: d, k: 3 * d, a: dQkv.ptr, aTrans: false, b: wqkv.ptr, bTrans: false, c: dxOne.ptr, beta: 0 });
const msNnThree = time(nnThree), msNnOne = time(nnOne);
nnThree(); nnOne();
line('three NN 16384×2048×2048 (2nd, 3rd accumulating)', msNnThree);
line('one NN 16384×2048×6144', msNnOne, `; vs three: ${relErr(down(dxOne), down(dxThree)).toExponential(2)} (three roundings to bf16 against one)`);

console.log(`dWqkv = dQKVᵀ·LN_1(x) → float32, written (beta 0)`);
const dwThree = be.alloc([3 * d, d], 'float32'), dwOne = be.alloc([3 * d, d], 'float32');
const tnThree = () => parts.forEach((p, i) => gemm({ m: d, n: d, k: rows, a: p.ptr, aTrans: true, b: ln1Out.ptr, bTrans: false, c: dwThree.ptr + i * d * d * 4, beta: 0, outType: 'float32' }));
const tnOne = () => gemm({ m: 3 * d, n: d, k: rows, a: dQkv.ptr, aTrans: true, b: ln1Out.ptr, bTrans: false, c: dwOne.ptr, beta: 0, outType: 'float32' });
const msTnThree = time(tnThree), msTnOne = time(tnOne);
tnThree(); tnOne();
const one = down(dwOne), three = down(dwThree);
const differ = one.filter((x, i) => x !== three[i]).length;
line('three TN 2048×2048×16384 → f32', msTnThree);
line('one TN 6144×2048×16384 → f32', msTnOne, `; vs three: ${differ} of ${one.length} values differ, relative ${relErr(one, three).toExponential(2)}`);
console.log(`per layer: ${(msNnThree + msTnThree).toFixed(3)} → ${(msNnOne + msTnOne).toFixed(3)} ms; 24 layers: ${(24 * (msNnThree + msTnThree - msNnOne - msTnOne)).toFixed(2)} ms less`);
