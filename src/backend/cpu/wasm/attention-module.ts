import { FunctionBuilder } from './emitter.js';

/**
 * The generated part of attention that the linear tiles do not already cover: the weighted sum of
 * value rows, out[e] = Σ_j p[j] · v[j, e]. (The scores q·k_j are a linear tile with the row stride set
 * to d_model and the sum cut to one head's dims: see attention-heads.ts.)
 *
 *   pv_<n>(p, v, vStride, out, keys, chunks)
 *     p:     byte address of the float32 weights p[0 … keys)
 *     v:     byte address of v[0, dim 0] of this head (float32; row j at v + j·vStride)
 *     out:   byte address of the float32 results (stored, not added)
 *     chunks: how many chunks of 4·n dims to do, one after the other
 *
 * Each chunk keeps its n float32x4 sums in registers while it walks all the keys: with n = 8 (32
 * dims, a 128-byte piece of each value row) that is 8 sums, the splat weight and one loaded vector,
 * within the 16 SIMD registers V8 has. The caller runs pv_8 over the first dims, pv_1 over the next
 * multiple of 4, and adds the last dHead % 4 dims itself.
 */
export const PV_WIDTHS = [8, 1] as const;
export const pvName = (n: number): string => `pv_${n}`;

export function attentionFunctions(): FunctionBuilder[] {
  return PV_WIDTHS.map(emitWeightedSum);
}

function emitWeightedSum(n: number): FunctionBuilder {
  const f = new FunctionBuilder(pvName(n), ['i32', 'i32', 'i32', 'i32', 'i32', 'i32']);
  const [p, v, vStride, out, keys, chunks] = [0, 1, 2, 3, 4, 5];
  const j = f.local('i32'), pRow = f.local('i32'), vRow = f.local('i32');
  const acc = Array.from({ length: n }, () => f.local('v128'));
  const weight = f.local('v128');
  const advance = (pointer: number, by: () => void) => { f.get(pointer); by(); f.i32Add().set(pointer); };

  f.block(() => {
    f.get(chunks).i32Eqz().brIf(0);
    f.loop(() => {
      for (const a of acc) f.f32(0).f32x4Splat().set(a);
      f.get(p).set(pRow);
      f.get(v).set(vRow);
      f.get(keys).set(j);
      f.block(() => {
        f.get(j).i32Eqz().brIf(0);
        f.loop(() => {
          f.get(pRow).v128Load32Splat().set(weight);
          for (let i = 0; i < n; i++) {
            f.get(acc[i]).get(weight).get(vRow).v128Load(16 * i).f32x4Mul().f32x4Add().set(acc[i]);
          }
          advance(pRow, () => f.i32(4));
          advance(vRow, () => f.get(vStride));
          f.get(j).i32(1).i32Sub().set(j);
          f.get(j).brIf(0);
        });
      });
      for (let i = 0; i < n; i++) f.get(out).get(acc[i]).v128Store(16 * i);
      // Next chunk: 4·n dims further along the value rows and the output.
      advance(v, () => f.i32(16 * n));
      advance(out, () => f.i32(16 * n));
      f.get(chunks).i32(1).i32Sub().set(chunks);
      f.get(chunks).brIf(0);
    });
  });
  return f;
}
