import { inflateRawSync } from 'node:zlib';
import { FormatError } from '../util/errors.js';
import { RangeFile } from './file-range.js';

/**
 * The zip container of PyTorch `.bin` files, read by ranges: the end-of-central-directory record (and
 * its ZIP64 form for files over 4 GB), the central directory, and each entry's local header. PyTorch
 * stores tensor data uncompressed, so a storage is one contiguous byte range of the file.
 */
export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflated. */
  method: number;
  crc32: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const EOCD_SIGNATURE = 0x06054b50;
const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
const ZIP64_EOCD_SIGNATURE = 0x06064b50;
const CENTRAL_SIGNATURE = 0x02014b50;
const LOCAL_SIGNATURE = 0x04034b50;
const U32_MAX = 0xffffffff;
const U16_MAX = 0xffff;
/** Deflated entries are small metadata in a torch checkpoint; anything this big is not ours to inflate. */
const MAX_INFLATED_BYTES = 256 * 1024 * 1024;

export class ZipArchive {
  private readonly dataOffsets = new Map<string, number>();

  private constructor(readonly file: RangeFile, readonly entries: Map<string, ZipEntry>) {}

  get path(): string {
    return this.file.path;
  }

  static async open(file: RangeFile): Promise<ZipArchive> {
    const { offset, size, count } = await findCentralDirectory(file);
    const directory = await file.read(offset, size, 'the zip central directory');
    return new ZipArchive(file, parseCentralDirectory(file, directory, count));
  }

  entry(name: string): ZipEntry {
    const entry = this.entries.get(name);
    if (!entry) throw new FormatError(this.path, `zip entry ${name} is missing`);
    return entry;
  }

  /** Absolute file offset of an entry's data (after its local header, whose extra field may differ from the central one). */
  async dataOffset(entry: ZipEntry): Promise<number> {
    const cached = this.dataOffsets.get(entry.name);
    if (cached !== undefined) return cached;
    const header = await this.file.read(entry.localHeaderOffset, 30, `the local header of ${entry.name}`);
    if (header.readUInt32LE(0) !== LOCAL_SIGNATURE) {
      throw new FormatError(this.path, `corrupt zip: no local header for ${entry.name} at byte ${entry.localHeaderOffset}`);
    }
    const start = entry.localHeaderOffset + 30 + header.readUInt16LE(26) + header.readUInt16LE(28);
    if (start + entry.compressedSize > this.file.size) {
      throw new FormatError(this.path, `truncated: zip entry ${entry.name} ends at byte ${start + entry.compressedSize} but the file has ${this.file.size} bytes`);
    }
    this.dataOffsets.set(entry.name, start);
    return start;
  }

  /** Bytes [start, start+length) of a stored (uncompressed) entry, read straight from the file. */
  async readRange(entry: ZipEntry, start: number, length: number): Promise<Buffer> {
    if (entry.method !== 0) throw new FormatError(this.path, `zip entry ${entry.name} is compressed (method ${entry.method}); tensor data must be stored`);
    if (start < 0 || length < 0 || start + length > entry.size) {
      throw new FormatError(this.path, `bytes ${start}..${start + length} are outside zip entry ${entry.name} (${entry.size} bytes)`);
    }
    return this.file.read((await this.dataOffset(entry)) + start, length, `zip entry ${entry.name}`);
  }

  /** A whole small entry (stored or deflated), checked against its CRC-32. */
  async read(entry: ZipEntry): Promise<Buffer> {
    const raw = await this.file.read(await this.dataOffset(entry), entry.compressedSize, `zip entry ${entry.name}`);
    let data: Buffer;
    if (entry.method === 0) data = raw;
    else if (entry.method === 8) {
      if (entry.size > MAX_INFLATED_BYTES) throw new FormatError(this.path, `zip entry ${entry.name} is a ${entry.size}-byte deflated entry, too large to inflate`);
      try {
        data = inflateRawSync(raw, { maxOutputLength: MAX_INFLATED_BYTES });
      } catch (error) {
        throw new FormatError(this.path, `corrupt zip: cannot inflate ${entry.name} (${(error as Error).message})`);
      }
    } else throw new FormatError(this.path, `zip entry ${entry.name} uses compression method ${entry.method}; only stored and deflated are supported`);
    if (data.length !== entry.size) throw new FormatError(this.path, `corrupt zip: ${entry.name} has ${data.length} bytes, the directory says ${entry.size}`);
    if (crc32(data) !== entry.crc32) throw new FormatError(this.path, `corrupt zip: CRC-32 mismatch in ${entry.name}`);
    return data;
  }
}

async function findCentralDirectory(file: RangeFile): Promise<{ offset: number; size: number; count: number }> {
  // The EOCD record is 22 bytes plus a comment of at most 64 KiB, at the very end of the file.
  const tailLength = Math.min(file.size, 22 + U16_MAX + 20);
  if (file.size < 22) throw new FormatError(file.path, `truncated or not a zip file: only ${file.size} bytes`);
  const tailStart = file.size - tailLength;
  const tail = await file.read(tailStart, tailLength, 'the zip end record');
  let at = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === EOCD_SIGNATURE && i + 22 + tail.readUInt16LE(i + 20) === tail.length) { at = i; break; }
  }
  if (at < 0) throw new FormatError(file.path, 'truncated or corrupt zip: no end-of-central-directory record (is the file complete?)');
  let count = tail.readUInt16LE(at + 10);
  let size = tail.readUInt32LE(at + 12);
  let offset = tail.readUInt32LE(at + 16);
  if (count === U16_MAX || size === U32_MAX || offset === U32_MAX) {
    // ZIP64: a locator just before the EOCD points at the 64-bit end record.
    if (at < 20 || tail.readUInt32LE(at - 20) !== ZIP64_LOCATOR_SIGNATURE) {
      throw new FormatError(file.path, 'corrupt zip: ZIP64 sizes without a ZIP64 locator');
    }
    const recordOffset = safeNumber(file, tail.readBigUInt64LE(at - 20 + 8), 'ZIP64 end record offset');
    const record = await file.read(recordOffset, 56, 'the ZIP64 end record');
    if (record.readUInt32LE(0) !== ZIP64_EOCD_SIGNATURE) throw new FormatError(file.path, 'corrupt zip: bad ZIP64 end record signature');
    count = safeNumber(file, record.readBigUInt64LE(32), 'ZIP64 entry count');
    size = safeNumber(file, record.readBigUInt64LE(40), 'ZIP64 directory size');
    offset = safeNumber(file, record.readBigUInt64LE(48), 'ZIP64 directory offset');
  }
  if (offset + size > file.size) {
    throw new FormatError(file.path, `truncated or corrupt zip: the central directory (bytes ${offset}..${offset + size}) is past the end of the ${file.size}-byte file`);
  }
  return { offset, size, count };
}

function parseCentralDirectory(file: RangeFile, dir: Buffer, count: number): Map<string, ZipEntry> {
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > dir.length || dir.readUInt32LE(p) !== CENTRAL_SIGNATURE) {
      throw new FormatError(file.path, `corrupt zip: central directory entry ${i} of ${count} is damaged`);
    }
    const flags = dir.readUInt16LE(p + 8);
    const method = dir.readUInt16LE(p + 10);
    const crc = dir.readUInt32LE(p + 16);
    let compressedSize = dir.readUInt32LE(p + 20);
    let size = dir.readUInt32LE(p + 24);
    const nameLength = dir.readUInt16LE(p + 28);
    const extraLength = dir.readUInt16LE(p + 30);
    const commentLength = dir.readUInt16LE(p + 32);
    let localHeaderOffset = dir.readUInt32LE(p + 42);
    const end = p + 46 + nameLength + extraLength + commentLength;
    if (end > dir.length) throw new FormatError(file.path, `corrupt zip: central directory entry ${i} runs past the directory`);
    const name = dir.toString('utf8', p + 46, p + 46 + nameLength);
    if (flags & 1) throw new FormatError(file.path, `zip entry ${name} is encrypted`);
    // ZIP64 extended information: 64-bit values for exactly the fields that hold 0xFFFFFFFF, in this order.
    let q = p + 46 + nameLength;
    const extraEnd = q + extraLength;
    while (q + 4 <= extraEnd) {
      const id = dir.readUInt16LE(q), length = dir.readUInt16LE(q + 2);
      if (id === 0x0001) {
        let r = q + 4;
        const next = (what: string) => {
          if (r + 8 > q + 4 + length) throw new FormatError(file.path, `corrupt zip: ZIP64 field of ${name} lacks its ${what}`);
          const value = safeNumber(file, dir.readBigUInt64LE(r), what);
          r += 8;
          return value;
        };
        if (size === U32_MAX) size = next('size');
        if (compressedSize === U32_MAX) compressedSize = next('compressed size');
        if (localHeaderOffset === U32_MAX) localHeaderOffset = next('header offset');
      }
      q += 4 + length;
    }
    if (localHeaderOffset + 30 > file.size) {
      throw new FormatError(file.path, `truncated or corrupt zip: entry ${name} starts at byte ${localHeaderOffset}, past the end of the file`);
    }
    entries.set(name, { name, method, crc32: crc, compressedSize, size, localHeaderOffset });
    p = end;
  }
  return entries;
}

function safeNumber(file: RangeFile, value: bigint, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(file.path, `corrupt zip: ${what} ${value} is too large`);
  return Number(value);
}

let crcTable: Uint32Array | undefined;

/** CRC-32 (IEEE), as zip stores it. node:zlib's crc32 is missing from older Node 20 releases. */
export function crc32(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = crcTable[(crc ^ data[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
