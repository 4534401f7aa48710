import { closeSync, fsyncSync, mkdirSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { temporaryPathFor } from '../util/atomic.js';
import { FormatError } from '../util/errors.js';
import type { ShardEntry } from './manifest.js';

/**
 * Token shards: flat files of whole samples, each `seqLen` uint16 little-endian tokens (the vocab,
 * 50432, fits in 16 bits). No header: the manifest is the index (file, sample count), so sample j of
 * a shard sits at byte j·seqLen·2 and is read by range, never by loading the file.
 */
export const DEFAULT_SHARD_BYTES = 64 * 1024 * 1024;

/**
 * Writes a numbered series of shard files, each to a temporary name renamed into place when full, so
 * a crash leaves no half-written shard under a final name.
 */
export class ShardWriter {
  private fd: number | null = null;
  private tmpPath = '';
  private finalPath = '';
  private inShard = 0;
  private readonly done: ShardEntry[] = [];
  private readonly samplesPerShard: number;

  /** `prefix` is relative to `root`, e.g. `c4/train.part-00000-of-00001`; shards add `.00000.bin`. */
  constructor(private readonly root: string, private readonly prefix: string, private readonly seqLen: number, shardBytes = DEFAULT_SHARD_BYTES) {
    this.samplesPerShard = Math.max(1, Math.floor(shardBytes / (seqLen * 2)));
  }

  write(sample: Uint16Array): void {
    if (sample.length !== this.seqLen) throw new RangeError(`sample of ${sample.length} tokens, expected ${this.seqLen}`);
    if (this.fd === null) this.open();
    const bytes = new Uint8Array(sample.buffer, sample.byteOffset, sample.byteLength);
    if (!littleEndian) throw new Error('big-endian hosts are not supported by the shard writer');
    writeSync(this.fd!, bytes);
    this.inShard++;
    if (this.inShard === this.samplesPerShard) this.close();
  }

  /** Closes the last shard and returns every shard written, in order. */
  finish(): ShardEntry[] {
    this.close();
    return this.done;
  }

  /** Removes the temporary file of an unfinished shard (after an error). */
  abort(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
      rmSync(this.tmpPath, { force: true });
    }
  }

  private open(): void {
    const name = `${this.prefix}.${String(this.done.length).padStart(5, '0')}.bin`;
    this.finalPath = join(this.root, name);
    mkdirSync(dirname(this.finalPath), { recursive: true });
    this.tmpPath = temporaryPathFor(this.finalPath);
    this.fd = openSync(this.tmpPath, 'w');
    this.inShard = 0;
    this.done.push({ file: name, samples: 0 });
  }

  private close(): void {
    if (this.fd === null) return;
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = null;
    renameSync(this.tmpPath, this.finalPath);
    this.done[this.done.length - 1]!.samples = this.inShard;
  }
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Reads samples of one source and split by their index across its shards (binary search over the
 * cumulative counts), with one open file descriptor per shard, opened on first use.
 */
export class ShardReader {
  private readonly starts: number[] = [];
  private readonly fds: (number | null)[];
  readonly samples: number;

  constructor(private readonly root: string, private readonly shards: ShardEntry[], private readonly seqLen: number) {
    let total = 0;
    for (const shard of shards) {
      this.starts.push(total);
      total += shard.samples;
    }
    this.samples = total;
    this.fds = shards.map(() => null);
  }

  /** Copies sample `index` into `out` (seqLen tokens) at `outOffset`. */
  read(index: number, out: Uint16Array, outOffset = 0): void {
    if (!(index >= 0 && index < this.samples && Number.isInteger(index))) throw new RangeError(`sample ${index} outside [0, ${this.samples})`);
    let lo = 0, hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid]! <= index) lo = mid;
      else hi = mid - 1;
    }
    const fd = this.fds[lo] ?? (this.fds[lo] = openSync(join(this.root, this.shards[lo]!.file), 'r'));
    const bytes = this.seqLen * 2;
    const view = new Uint8Array(out.buffer, out.byteOffset + outOffset * 2, bytes);
    const position = (index - this.starts[lo]!) * bytes;
    let got = 0;
    while (got < bytes) {
      const n = readSync(fd, view, got, bytes - got, position + got);
      if (n === 0) throw new FormatError(join(this.root, this.shards[lo]!.file), `truncated: sample ${index - this.starts[lo]!} ends past the end of the file`);
      got += n;
    }
    if (!littleEndian) throw new Error('big-endian hosts are not supported by the shard reader');
  }

  close(): void {
    for (let i = 0; i < this.fds.length; i++) {
      if (this.fds[i] !== null) closeSync(this.fds[i]!);
      this.fds[i] = null;
    }
  }
}
