import type { SplitStats } from './manifest.js';
import { emptySplit } from './manifest.js';

/**
 * llm-foundry's concat-tokens packing: each document's tokens then EOS are appended to one running
 * stream per source, cut into samples of exactly `seqLen` tokens (no padding; a document may span
 * samples). What is left at the end, shorter than a sample, is dropped and counted.
 */
export class Packer {
  private readonly buffer: Uint16Array;
  private filled = 0;
  readonly stats: SplitStats = emptySplit();

  constructor(private readonly seqLen: number, private readonly eosId: number, private readonly emit: (sample: Uint16Array) => void, private readonly where = 'document') {
    if (!Number.isInteger(seqLen) || seqLen < 1) throw new RangeError(`seqLen must be a positive integer, got ${seqLen}`);
    checkTokenId(eosId, 'EOS');
    this.buffer = new Uint16Array(seqLen);
  }

  /** Appends one document (its token ids, without EOS) and the EOS after it. */
  addDocument(ids: ArrayLike<number>): void {
    for (let i = 0; i < ids.length; i++) this.push(checkTokenId(ids[i]!, this.where));
    this.push(this.eosId);
    this.stats.documents++;
    this.stats.documentTokens += ids.length;
  }

  /** Ends the stream: the partial sample, if any, is dropped. */
  finish(): SplitStats {
    this.stats.droppedTokens += this.filled;
    this.filled = 0;
    return this.stats;
  }

  private push(id: number): void {
    this.buffer[this.filled++] = id;
    if (this.filled === this.seqLen) {
      this.emit(this.buffer);
      this.stats.samples++;
      this.filled = 0;
    }
  }
}

function checkTokenId(id: number, where: string): number {
  if (!(id >= 0 && id <= 0xffff) || !Number.isInteger(id)) {
    throw new RangeError(`${where}: token id ${id} does not fit the uint16 shard format`);
  }
  return id;
}
