/**
 * Tensor maps (CUtensorMap) for the TMA unit's tiled copies (`cp.async.bulk.tensor`, sm_90): encoded on
 * the host by cuTensorMapEncodeTiled and passed to a kernel by value (kernel argument kind `m`,
 * driver.ts LaunchArgs). One job: describe a bf16 row-major matrix of `batch` blocks of rows (a 3-D
 * tensor: columns, rows, batch) and the box a copy moves, 64 columns (128 bytes, one 128-byte swizzle
 * row) × `boxRows` rows, written to shared memory with the 128-byte swizzle: row r of the box at r·128
 * bytes from a 1024-byte-aligned destination, its 16-byte chunk c at chunk c ^ (r & 7) — the layout
 * wgmma's 128B-swizzle descriptors read (wgmma.cuh) and the cp.async producers write by hand. Rows past
 * `rows` (and columns past `columns`) are read as zeros, so a partial tile at a sequence's end needs no
 * bounds check, and the batch dimension keeps one sequence's last tile from reading the next one.
 */
import { alignedHostBytes, cu, TENSOR_MAP_BYTES } from './driver.js';

// cuda.h enums (CUDA 12/13).
const CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9;
const CU_TENSOR_MAP_INTERLEAVE_NONE = 0;
const CU_TENSOR_MAP_SWIZZLE_128B = 3;
const CU_TENSOR_MAP_L2_PROMOTION_L2_256B = 3;
const CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0;  // out-of-bounds elements read as zeros

/** Columns of a box: 64 bf16 = 128 bytes, the widest inner box the 128-byte swizzle allows. */
export const TMA_BOX_COLUMNS = 64;

/**
 * A bf16 matrix of `batch` blocks of `rows` rows × `columns` columns at `address` (device), its rows
 * `rowStride` elements apart and its blocks `batchStride` elements apart (row i of block b at
 * address + 2·(b·batchStride + i·rowStride)); boxes of TMA_BOX_COLUMNS × `boxRows`.
 */
export interface Bf16Rows { address: number; columns: number; rows: number; batch: number; rowStride: number; batchStride: number; boxRows: number }

/**
 * Whether the TMA unit can describe `m` (cuTensorMapEncodeTiled's rules): a 16-byte-aligned address,
 * strides that are multiples of 16 bytes below 2^40, sizes in [1, 2^32], blocks that do not overlap
 * (batchStride ≥ rows·rowStride) and a box of 1 to 256 rows.
 */
export function tmaDescribable(m: Bf16Rows): boolean {
  const whole = (x: number) => Number.isInteger(x) && x >= 1 && x <= 2 ** 32;
  const stride = (x: number) => Number.isInteger(x) && (2 * x) % 16 === 0 && 2 * x < 2 ** 40;
  return m.address % 16 === 0 && whole(m.columns) && whole(m.rows) && whole(m.batch) && stride(m.rowStride) && stride(m.batchStride)
    && m.rowStride >= m.columns && (m.batch === 1 || m.batchStride >= m.rows * m.rowStride) && Number.isInteger(m.boxRows) && m.boxRows >= 1 && m.boxRows <= 256;
}

// The driver writes the map at a 64-byte-aligned host address: one scratch block, reused.
let scratch: { map: ReturnType<typeof alignedHostBytes>; dims: Buffer; strides: Buffer; box: Buffer; elementStrides: Buffer } | null = null;

function encoderScratch(): NonNullable<typeof scratch> {
  if (scratch) return scratch;
  const elementStrides = Buffer.alloc(12);
  for (let i = 0; i < 3; i++) elementStrides.writeUInt32LE(1, 4 * i);
  scratch = { map: alignedHostBytes(TENSOR_MAP_BYTES, 64), dims: Buffer.alloc(24), strides: Buffer.alloc(16), box: Buffer.alloc(12), elementStrides };
  return scratch;
}

/** The tensor map of `m` (128 bytes, a fresh copy the caller may keep); throws where !tmaDescribable(m). */
export function bf16RowsMap(m: Bf16Rows): Uint8Array {
  if (!tmaDescribable(m)) throw new Error(`tensor map: ${JSON.stringify(m)} cannot be described to the TMA unit (alignment, strides or sizes)`);
  const s = encoderScratch();
  s.dims.writeBigUInt64LE(BigInt(m.columns), 0); s.dims.writeBigUInt64LE(BigInt(m.rows), 8); s.dims.writeBigUInt64LE(BigInt(m.batch), 16);
  s.strides.writeBigUInt64LE(BigInt(2 * m.rowStride), 0); s.strides.writeBigUInt64LE(BigInt(2 * Math.max(m.batchStride, m.rows * m.rowStride)), 8);
  s.box.writeUInt32LE(TMA_BOX_COLUMNS, 0); s.box.writeUInt32LE(m.boxRows, 4); s.box.writeUInt32LE(1, 8);
  cu('cuTensorMapEncodeTiled', Number(s.map.address), CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, m.address, s.dims, s.strides, s.box, s.elementStrides,
    CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return s.map.bytes.slice();
}

/** The maps of every matrix of one launch, or undefined where the TMA unit cannot describe one of them (the launch then takes its cp.async kernel). */
export function bf16RowsMaps(all: readonly Bf16Rows[]): Uint8Array[] | undefined {
  return all.every(tmaDescribable) ? all.map(bf16RowsMap) : undefined;
}
