import { promises as fs } from 'node:fs';
import { FormatError } from '../util/errors.js';
import { temporaryPathFor } from '../util/atomic.js';
import { RangeFile } from './file-range.js';
import { WeightDtype, bytesPerElement, elementCount, safetensorsCode, safetensorsDtype } from './dtype.js';

/**
 * safetensors: 8 bytes little-endian header length N, N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {string: string}}`, then the data;
 * offsets count from the first byte after the header.
 */
export interface SafetensorsEntry {
  name: string;
  dtype: WeightDtype;
  shape: number[];
  /** Absolute byte range in the file. */
  offset: number;
  length: number;
}

export interface SafetensorsHeader {
  file: string;
  entries: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
}

// The reference implementation caps headers at 100 MB; a bigger length is a corrupt file, not a header.
const MAX_HEADER_BYTES = 100_000_000;

/** Read and validate the header of an open safetensors file. */
export async function readSafetensorsHeader(file: RangeFile): Promise<SafetensorsHeader> {
  const path = file.path;
  if (file.size < 8) throw new FormatError(path, `truncated: ${file.size} bytes, too short for a safetensors header`);
  const headerLength = (await file.read(0, 8, 'the header length')).readBigUInt64LE(0);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw new FormatError(path, `corrupt safetensors header: declared header length ${headerLength} is implausible`);
  }
  const n = Number(headerLength);
  if (8 + n > file.size) {
    throw new FormatError(path, `truncated: the header claims ${n} bytes but the file has only ${file.size - 8} after the length`);
  }
  let json: unknown;
  try {
    json = JSON.parse((await file.read(8, n, 'the header')).toString('utf8'));
  } catch (error) {
    throw new FormatError(path, `corrupt safetensors header: not valid JSON (${(error as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new FormatError(path, 'corrupt safetensors header: the header is not a JSON object');
  }
  const dataStart = 8 + n;
  const dataSize = file.size - dataStart;
  const entries = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(path, value);
      continue;
    }
    entries.set(name, parseEntry(path, name, value, dataStart, dataSize));
  }
  checkNoOverlap(path, [...entries.values()]);
  return { file: path, entries, metadata };
}

function parseMetadata(path: string, value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FormatError(path, 'corrupt safetensors header: __metadata__ is not an object');
  }
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw new FormatError(path, `corrupt safetensors header: __metadata__.${k} is not a string`);
  }
  return value as Record<string, string>;
}

function parseEntry(path: string, name: string, value: unknown, dataStart: number, dataSize: number): SafetensorsEntry {
  const bad = (problem: string) => new FormatError(path, `corrupt safetensors header: tensor ${name}: ${problem}`);
  if (typeof value !== 'object' || value === null) throw bad('entry is not an object');
  const { dtype: code, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof code !== 'string') throw bad('missing dtype');
  const dtype = safetensorsDtype[code];
  if (!dtype) {
    throw new FormatError(path, `tensor ${name} has dtype ${code}; only F32, F16 and BF16 weights are supported`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw bad(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw bad(`data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  const expected = elementCount(shape) * bytesPerElement[dtype];
  if (end < begin || end - begin !== expected) {
    throw bad(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape [${shape.join(', ')}] of ${code} needs ${expected}`);
  }
  if (end > dataSize) {
    throw new FormatError(path, `truncated: tensor ${name} ends at data byte ${end} but the file holds ${dataSize} data bytes`);
  }
  return { name, dtype, shape: shape as number[], offset: dataStart + begin, length: expected };
}

function checkNoOverlap(path: string, entries: SafetensorsEntry[]): void {
  const sorted = entries.filter((e) => e.length > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].offset < sorted[i - 1].offset + sorted[i - 1].length) {
      throw new FormatError(path, `corrupt safetensors header: tensors ${sorted[i - 1].name} and ${sorted[i].name} overlap`);
    }
  }
}

/** One tensor's bytes, exactly as stored (little-endian). */
export function readSafetensorsTensor(file: RangeFile, entry: SafetensorsEntry): Promise<Buffer> {
  return file.read(entry.offset, entry.length, `tensor ${entry.name}`);
}

/** A tensor to write; `data` may be produced on demand so that the whole file never sits in memory. */
export interface TensorToWrite {
  name: string;
  dtype: WeightDtype;
  shape: number[];
  data: Uint8Array | (() => Uint8Array | Promise<Uint8Array>);
}

/**
 * Write a safetensors file atomically (temporary file, then rename), one tensor at a time in the
 * given order. The header is padded with spaces to a multiple of 8 bytes, as the reference writer does,
 * so that every tensor starts aligned.
 */
export async function writeSafetensors(path: string, tensors: TensorToWrite[], metadata: Record<string, string> = {}): Promise<void> {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || t.name in header) throw new Error(`writeSafetensors: duplicate or reserved tensor name ${t.name}`);
    const length = elementCount(t.shape) * bytesPerElement[t.dtype];
    header[t.name] = { dtype: safetensorsCode[t.dtype], shape: t.shape, data_offsets: [offset, offset + length] };
    offset += length;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const padding = (8 - (json.length % 8)) % 8;
  if (padding > 0) json = Buffer.concat([json, Buffer.alloc(padding, 0x20)]);
  const lengthField = Buffer.alloc(8);
  lengthField.writeBigUInt64LE(BigInt(json.length));

  const tmp = temporaryPathFor(path);
  const handle = await fs.open(tmp, 'w');
  try {
    try {
      await handle.write(lengthField);
      await handle.write(json);
      const bytesOf = async (t: TensorToWrite) => {
        const bytes = typeof t.data === 'function' ? await t.data() : t.data;
        const expected = elementCount(t.shape) * bytesPerElement[t.dtype];
        if (bytes.byteLength !== expected) {
          throw new Error(`writeSafetensors: tensor ${t.name} has ${bytes.byteLength} bytes, shape [${t.shape.join(', ')}] of ${t.dtype} needs ${expected}`);
        }
        return bytes;
      };
      // The next tensor's bytes are fetched (a download from the device, say) while this one is written;
      // both settle before either's error is thrown, so no write is left running on a closing handle.
      let bytes = tensors.length > 0 ? await bytesOf(tensors[0]) : null;
      for (let i = 1; bytes !== null; i++) {
        const [written, next] = await Promise.allSettled([writeAll(handle, bytes), i < tensors.length ? bytesOf(tensors[i]) : null]);
        if (written.status === 'rejected') throw written.reason;
        if (next.status === 'rejected') throw next.reason;
        bytes = next.value;
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, path);
  } catch (error) {
    await fs.rm(tmp, { force: true });
    throw error;
  }
}

async function writeAll(handle: fs.FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await handle.write(bytes, done, Math.min(bytes.byteLength - done, 1 << 30));
    done += bytesWritten;
  }
}
