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

/**
 * Decode reads the KV cache differently: a head's slice of a key row is 512 bytes every 8 KB (d_model
 * 2048), a new 4 KB page per key, where the hardware prefetchers stop; walking one head at a time
 * measured latency-bound (6 GB/s on one core). The `_heads` kernels walk the keys in the outer loop and
 * the heads inside it, so each key row is read front to back:
 *
 *   qk_heads(q, k, out, heads, groups, headBytes, kStride, outStride, keys)
 *     out[h · outStride + 4j] = Σ_{e < 8·groups} q[h, e] · k[j, h, e]   (q, k: head h at + h·headBytes)
 *   pv_heads_<n>(p, v, acc, heads, chunks, headBytes, pStride, vStride, keys)
 *     acc[h, e] += Σ_j p[h · pStride + 4j] · v[j, h, e] for e < 4·n·chunks  (acc in memory, added to)
 */
export const PV_HEADS_WIDTHS = [4, 1] as const;
export const pvHeadsName = (n: number): string => `pv_heads_${n}`;
export const QK_HEADS = 'qk_heads';

/**
 * The softmax's two passes over a row of raw scores, 4 at a time (the caller pads the row with −∞ to
 * a multiple of 4 and puts −∞ on padded keys), in place:
 *   biased_scores(row, vectors, scale, slope, pos) → max_j s_j,  s_j = raw_j·scale + (j − pos)·slope
 *   exp_shifted(row, vectors, max):  p_j = exp(s_j − max)
 * The JS kernel did these in float64 with Math.exp, which measured a third to two thirds of the wasm
 * path's time; here they are float32: s_j takes one rounding more than the raw score's own (which
 * already carries dHead/8 of them), and exp is within a few float32 ulps:
 *   x = max(x, −87) (exp(−87) is still a normal float32; below it the weight is negligible anyway),
 *   x = n·ln2 + r with n = nearest(x·log2 e) and ln2 split in two (Cody–Waite) so r is exact enough,
 *   exp(r) by its Taylor series to r⁷ (|r| ≤ ln2/2: the next term is < 2⁻²⁷ relative),
 *   2ⁿ built in the exponent bits: (n + 127) << 23.
 */
export const BIASED_SCORES = 'biased_scores';
export const EXP_SHIFTED = 'exp_shifted';

export function attentionFunctions(): FunctionBuilder[] {
  return [
    ...PV_WIDTHS.map(emitWeightedSum), emitScoresAcrossHeads(), ...PV_HEADS_WIDTHS.map(emitWeightedSumAcrossHeads),
    emitBiasedScores(), emitExpShifted(),
  ];
}

function emitBiasedScores(): FunctionBuilder {
  const f = new FunctionBuilder(BIASED_SCORES, ['i32', 'i32', 'f32', 'f32', 'f32'], ['f32']);
  const [row, vectors, scale, slope, pos] = [0, 1, 2, 3, 4];
  const j = f.local('v128'), posV = f.local('v128'), scaleV = f.local('v128'), slopeV = f.local('v128');
  const four = f.local('v128'), max = f.local('v128'), s = f.local('v128');
  const { add, countedLoop } = loopHelpers(f);
  f.f32(0).f32x4Splat().f32(1).f32x4ReplaceLane(1).f32(2).f32x4ReplaceLane(2).f32(3).f32x4ReplaceLane(3).set(j);
  f.get(pos).f32x4Splat().set(posV);
  f.get(scale).f32x4Splat().set(scaleV);
  f.get(slope).f32x4Splat().set(slopeV);
  f.f32(4).f32x4Splat().set(four);
  f.f32(-Infinity).f32x4Splat().set(max);
  countedLoop(vectors, () => {
    f.get(row).v128Load().get(scaleV).f32x4Mul();
    f.get(j).get(posV).f32x4Sub().get(slopeV).f32x4Mul();
    f.f32x4Add().set(s);
    f.get(row).get(s).v128Store();
    f.get(max).get(s).f32x4Max().set(max);
    f.get(j).get(four).f32x4Add().set(j);
    add(row, () => f.i32(16));
  });
  f.get(max).f32x4ExtractLane(0).get(max).f32x4ExtractLane(1).f32Max();
  f.get(max).f32x4ExtractLane(2).get(max).f32x4ExtractLane(3).f32Max();
  f.f32Max();
  return f;
}

const LOG2_E = 1.4426950408889634;
/** ln 2 = LN2_HIGH + LN2_LOW, the high part with few enough bits that n·LN2_HIGH is exact in float32. */
const LN2_HIGH = 0.693359375, LN2_LOW = -2.12194440e-4;
const EXP_FLOOR = -87;

function emitExpShifted(): FunctionBuilder {
  const f = new FunctionBuilder(EXP_SHIFTED, ['i32', 'i32', 'f32']);
  const [row, vectors, max] = [0, 1, 2];
  const maxV = f.local('v128'), x = f.local('v128'), n = f.local('v128'), r = f.local('v128'), poly = f.local('v128');
  const { add, countedLoop } = loopHelpers(f);
  f.get(max).f32x4Splat().set(maxV);
  const splat = (value: number) => f.f32(value).f32x4Splat();
  countedLoop(vectors, () => {
    f.get(row).v128Load().get(maxV).f32x4Sub();
    splat(EXP_FLOOR).f32x4Max().set(x);
    f.get(x); splat(LOG2_E); f.f32x4Mul().f32x4Nearest().set(n);
    f.get(x).get(n); splat(LN2_HIGH); f.f32x4Mul().f32x4Sub();
    f.get(n); splat(LN2_LOW); f.f32x4Mul().f32x4Sub().set(r);
    // Horner: 1 + r(1 + r/2(1 + r/3(… (1 + r/7)))), as Σ r^k / k! with the coefficients in float32.
    splat(1 / 5040).set(poly);
    for (const c of [1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1, 1]) {
      f.get(poly).get(r).f32x4Mul(); splat(c); f.f32x4Add().set(poly);
    }
    // × 2ⁿ: the float32 whose exponent field is n + 127 and mantissa 0.
    f.get(row);
    f.get(poly);
    f.get(n).i32x4TruncSatF32x4S().i32(127).i32x4Splat().i32x4Add().i32(23).i32x4Shl();
    f.f32x4Mul().v128Store();
    add(row, () => f.i32(16));
  });
  return f;
}

function emitScoresAcrossHeads(): FunctionBuilder {
  const f = new FunctionBuilder(QK_HEADS, ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32']);
  const [q, k, out, heads, groups, headBytes, kStride, outStride, keys] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const h = f.local('i32'), g = f.local('i32'), qh = f.local('i32'), kh = f.local('i32'), oh = f.local('i32');
  const qq = f.local('i32'), kk = f.local('i32');
  const acc0 = f.local('v128'), acc1 = f.local('v128'), sum = f.local('v128');
  const { add, countedLoop } = loopHelpers(f);

  countedLoop(keys, () => {
    f.get(q).set(qh);
    f.get(k).set(kh);
    f.get(out).set(oh);
    f.get(heads).set(h);
    countedLoop(h, () => {
      f.f32(0).f32x4Splat().set(acc0);
      f.f32(0).f32x4Splat().set(acc1);
      f.get(groups).set(g);
      f.get(qh).set(qq);
      f.get(kh).set(kk);
      countedLoop(g, () => {
        f.get(acc0).get(qq).v128Load().get(kk).v128Load().f32x4Mul().f32x4Add().set(acc0);
        f.get(acc1).get(qq).v128Load(16).get(kk).v128Load(16).f32x4Mul().f32x4Add().set(acc1);
        add(qq, () => f.i32(32));
        add(kk, () => f.i32(32));
      });
      // The four lanes of (low half + high half), summed pairwise, as the linear tiles do.
      f.get(acc0).get(acc1).f32x4Add().set(sum);
      f.get(oh);
      f.get(sum).f32x4ExtractLane(0).get(sum).f32x4ExtractLane(1).f32Add();
      f.get(sum).f32x4ExtractLane(2).get(sum).f32x4ExtractLane(3).f32Add();
      f.f32Add().f32Store();
      add(qh, () => f.get(headBytes));
      add(kh, () => f.get(headBytes));
      add(oh, () => f.get(outStride));
    });
    add(k, () => f.get(kStride));
    add(out, () => f.i32(4));
  });
  return f;
}

function emitWeightedSumAcrossHeads(n: number): FunctionBuilder {
  const f = new FunctionBuilder(pvHeadsName(n), ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32']);
  const [p, v, acc, heads, chunks, headBytes, pStride, vStride, keys] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const h = f.local('i32'), c = f.local('i32'), ph = f.local('i32'), vh = f.local('i32'), ah = f.local('i32');
  const vc = f.local('i32'), ac = f.local('i32');
  const weight = f.local('v128');
  const { add, countedLoop } = loopHelpers(f);

  countedLoop(keys, () => {
    f.get(p).set(ph);
    f.get(v).set(vh);
    f.get(acc).set(ah);
    f.get(heads).set(h);
    countedLoop(h, () => {
      f.get(ph).v128Load32Splat().set(weight);
      f.get(vh).set(vc);
      f.get(ah).set(ac);
      f.get(chunks).set(c);
      countedLoop(c, () => {
        for (let i = 0; i < n; i++) {
          f.get(ac).get(ac).v128Load(16 * i).get(weight).get(vc).v128Load(16 * i).f32x4Mul().f32x4Add().v128Store(16 * i);
        }
        add(vc, () => f.i32(16 * n));
        add(ac, () => f.i32(16 * n));
      });
      add(ph, () => f.get(pStride));
      add(vh, () => f.get(headBytes));
      add(ah, () => f.get(headBytes));
    });
    add(p, () => f.i32(4));
    add(v, () => f.get(vStride));
  });
  return f;
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

/** `pointer += by()`, and `while (counter-- > 0) body()` (nothing when the counter starts at 0). */
function loopHelpers(f: FunctionBuilder) {
  const add = (pointer: number, by: () => void) => { f.get(pointer); by(); f.i32Add().set(pointer); };
  const countedLoop = (counter: number, body: () => void) => f.block(() => {
    f.get(counter).i32Eqz().brIf(0);
    f.loop(() => {
      body();
      f.get(counter).i32(1).i32Sub().set(counter);
      f.get(counter).brIf(0);
    });
  });
  return { add, countedLoop };
}
