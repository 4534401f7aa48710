import { promises as fs } from 'node:fs';
import { FormatError, UserError } from '../util/errors.js';

const READ_PIECE = 16 * 1024 * 1024;
const PARALLEL_READS = 4;

/**
 * One open file read by byte ranges. Checkpoints can be larger than one Buffer may hold, so nothing
 * in src/io reads a whole weights file: callers ask for the exact range they need.
 */
export class RangeFile {
  private constructor(readonly path: string, private readonly handle: fs.FileHandle, readonly size: number) {}

  static async open(path: string): Promise<RangeFile> {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(path, 'r');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new UserError(`${path}: no such file`, { cause: error });
      throw new UserError(`${path}: cannot open (${code ?? String(error)})`, { cause: error });
    }
    const { size } = await handle.stat();
    return new RangeFile(path, handle, size);
  }

  /** Exactly `length` bytes from `offset`; a range past the end is a truncated file. */
  async read(offset: number, length: number, what = 'data'): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new FormatError(this.path, `invalid byte range for ${what}: offset ${offset}, length ${length}`);
    }
    if (offset + length > this.size) {
      throw new FormatError(this.path,
        `truncated: ${what} needs bytes ${offset}..${offset + length} but the file has ${this.size} bytes`);
    }
    const buffer = Buffer.allocUnsafeSlow(length); // unpooled: byteOffset 0, so typed-array views are aligned
    // Large ranges go in 16 MiB pieces, a few at a time on libuv's thread pool: one huge read() is
    // several times slower than this (measured 0.7 vs 3 GB/s from the page cache).
    const pieces: number[] = [];
    for (let start = 0; start < length; start += READ_PIECE) pieces.push(start);
    const worker = async () => {
      for (let start = pieces.shift(); start !== undefined; start = pieces.shift()) {
        await this.readInto(buffer, start, Math.min(READ_PIECE, length - start), offset + start, what);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL_READS, pieces.length) }, worker));
    return buffer;
  }

  private async readInto(buffer: Buffer, at: number, length: number, position: number, what: string): Promise<void> {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(buffer, at + done, length - done, position + done);
      if (bytesRead === 0) throw new FormatError(this.path, `truncated while reading ${what} at byte ${position + done}`);
      done += bytesRead;
    }
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
