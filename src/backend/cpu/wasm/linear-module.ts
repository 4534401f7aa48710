import { encodeModule, FunctionBuilder } from './emitter.js';

/**
 * The generated matrix kernels: out[i, j] = Σ_k x[i, k] · w[j, k] over float32 x and a float32 or
 * bfloat16 weight row, 8 values of k per step, in float32 SIMD with two accumulators per output
 * (one per half of the 8). Each function computes a tile of `rows` input rows × `cols` weight rows
 * at a time, and walks `tiles` such tiles along the weight (output columns):
 *
 *   tile_<dtype>_<rows>x<cols>(x, w, out, groups, inWidth, outWidth, tiles)
 *     x:   byte address of input row 0          (float32, inWidth per row)
 *     w:   byte address of weight row 0         (float32 or bfloat16 bits, inWidth per row)
 *     out: byte address of out[0, 0]            (float32, outWidth per row); outputs are stored, not added
 *     groups: how many 8-wide steps of k to sum (inWidth >> 3; the caller adds the last inWidth % 8)
 *
 * A tile of several input rows (prefill) widens each weight chunk once for all of them. bfloat16 is
 * the top half of a float32, so widening puts each 16-bit value above 16 zero bits: an interleave of
 * zeros with the packed values, one `i8x16.shuffle` per half (V8 turns it into one unpack instruction;
 * `i32x4.extend_low_i16x8_u` + `i32x4.shl` does the same in two and measured ~1.5× slower).
 *
 * Tile shapes were chosen by measurement on this machine's Zen 5 (process CPU time, so the other
 * engineers' load counts less): with one row of up to 4096 inputs, more weight rows per tile (1×2 …
 * 1×4) was slower than 1×1 (~20 GB/s of bf16 weights on one core, from DRAM); with 8192 inputs (the
 * MLP's down projection; x is 32 KB and no longer stays in L1 beside the weight stream) 1×1 fell to
 * ~13 GB/s and 1×3, which loads each x chunk once for three weight rows, kept ~20. For prefill 2×1
 * and 3×1 reached 32–35 GFLOP/s and 4×1 much less (V8 keeps SIMD values in 16 registers: 4 rows spill).
 */
export type WeightKind = 'bf16' | 'f32';

export interface TileShape { rows: number; cols: number }

/**
 * The tiles the driver (linear-columns.ts) uses: blocks of 3 input rows, then 2 or 1 for the rest;
 * a single row of a wide input (more than 4096) goes 3 weight rows at a time.
 */
export const TILE_SHAPES: readonly TileShape[] = [{ rows: 3, cols: 1 }, { rows: 2, cols: 1 }, { rows: 1, cols: 1 }, { rows: 1, cols: 3 }];

/** Byte lanes of shuffle(zero, packed) that put 16-bit value i of packed's low/high half above zeros. */
const INTERLEAVE_LOW_16 = [0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23];
const INTERLEAVE_HIGH_16 = [8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31];

export const tileName = (kind: WeightKind, t: TileShape): string => `tile_${kind}_${t.rows}x${t.cols}`;

/** The linear tiles, followed by `extra` functions (the attention kernels) in the same module. */
export function buildLinearModule(maxPages: number, shapes: readonly TileShape[] = TILE_SHAPES, extra: readonly FunctionBuilder[] = []): Uint8Array<ArrayBuffer> {
  const functions: FunctionBuilder[] = [];
  for (const kind of ['bf16', 'f32'] as const) {
    for (const shape of shapes) functions.push(emitTile(kind, shape));
  }
  return encodeModule([...functions, ...extra], { minPages: 1, maxPages });
}

function emitTile(kind: WeightKind, { rows, cols }: TileShape): FunctionBuilder {
  const f = new FunctionBuilder(tileName(kind, { rows, cols }), ['i32', 'i32', 'i32', 'i32', 'i32', 'i32', 'i32']);
  const [x, w, out, groups, inWidth, outWidth, tiles] = [0, 1, 2, 3, 4, 5, 6];
  const weightBytes = kind === 'bf16' ? 2 : 4;
  const k = f.local('i32');
  const xRow = Array.from({ length: rows }, () => f.local('i32'));
  const wRow = Array.from({ length: cols }, () => f.local('i32'));
  const outRow = f.local('i32');
  // acc[r][c][h]: half h (k mod 8 < 4, or ≥ 4) of the sum for input row r, weight row c.
  const acc = Array.from({ length: rows }, () => Array.from({ length: cols }, () => [f.local('v128'), f.local('v128')]));
  const wLo = Array.from({ length: cols }, () => f.local('v128'));
  const wHi = Array.from({ length: cols }, () => f.local('v128'));
  const xLo = f.local('v128'), xHi = f.local('v128'), packed = f.local('v128'), zero = f.local('v128');

  // p = base + index · scale (byte addresses of the tile's rows)
  const setAddress = (target: number, base: number, index: number, scale: number) =>
    f.get(base).get(inWidth).i32(index * scale).i32Mul().i32Add().set(target);
  const advance = (pointer: number, bytes: number) => f.get(pointer).i32(bytes).i32Add().set(pointer);

  f.f32(0).f32x4Splat().set(zero);
  f.block(() => {
    f.get(tiles).i32Eqz().brIf(0);
    f.loop(() => {
      for (let r = 0; r < rows; r++) setAddress(xRow[r], x, r, 4);
      for (let c = 0; c < cols; c++) setAddress(wRow[c], w, c, weightBytes);
      for (const a of acc.flat(2)) f.f32(0).f32x4Splat().set(a);

      f.get(groups).set(k);
      f.block(() => {
        f.get(k).i32Eqz().brIf(0);
        f.loop(() => {
          // Eight weights of each weight row, as two float32x4.
          for (let c = 0; c < cols; c++) {
            if (kind === 'bf16') {
              f.get(wRow[c]).v128Load().set(packed);
              f.get(zero).get(packed).i8x16Shuffle(INTERLEAVE_LOW_16).set(wLo[c]);
              f.get(zero).get(packed).i8x16Shuffle(INTERLEAVE_HIGH_16).set(wHi[c]);
            } else {
              f.get(wRow[c]).v128Load().set(wLo[c]);
              f.get(wRow[c]).v128Load(16).set(wHi[c]);
            }
            advance(wRow[c], 8 * weightBytes);
          }
          // Eight inputs of each input row, multiplied into every weight row's accumulators.
          for (let r = 0; r < rows; r++) {
            f.get(xRow[r]).v128Load().set(xLo);
            f.get(xRow[r]).v128Load(16).set(xHi);
            advance(xRow[r], 32);
            for (let c = 0; c < cols; c++) {
              f.get(acc[r][c][0]).get(xLo).get(wLo[c]).f32x4Mul().f32x4Add().set(acc[r][c][0]);
              f.get(acc[r][c][1]).get(xHi).get(wHi[c]).f32x4Mul().f32x4Add().set(acc[r][c][1]);
            }
          }
          f.get(k).i32(1).i32Sub().set(k);
          f.get(k).brIf(0);
        });
      });

      // out[r, c] = the four lanes of (low half + high half), summed pairwise.
      for (let r = 0; r < rows; r++) {
        f.get(out).get(outWidth).i32(4 * r).i32Mul().i32Add().set(outRow);
        for (let c = 0; c < cols; c++) {
          f.get(acc[r][c][0]).get(acc[r][c][1]).f32x4Add().set(xLo);
          f.get(outRow);
          f.get(xLo).f32x4ExtractLane(0).get(xLo).f32x4ExtractLane(1).f32Add();
          f.get(xLo).f32x4ExtractLane(2).get(xLo).f32x4ExtractLane(3).f32Add();
          f.f32Add().f32Store(4 * c);
        }
      }

      // Next tile: `cols` weight rows and output columns further on.
      advance(out, 4 * cols);
      f.get(w).get(inWidth).i32(cols * weightBytes).i32Mul().i32Add().set(w);
      f.get(tiles).i32(1).i32Sub().set(tiles);
      f.get(tiles).brIf(0);
    });
  });
  return f;
}
