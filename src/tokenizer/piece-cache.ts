/** Start size and the size at which the cache stops growing and is emptied instead (slots, powers of 2). */
const INITIAL_SLOTS = 1 << 16;
const MAX_SLOTS = 1 << 21;
/** Each slot is 4 int32s in one array, so a probe touches one cache line: */
const HASH = 0; // the key's hash (0 = empty slot)
const OFFSET = 1; // where the key's UTF-16 units start in the key pool
const LENGTH = 2; // the key's length in units
const VALUE = 3; // the id when the piece is one token, else -(index in multi) - 1

/**
 * Piece → token ids, looked up by a span of the text without slicing it. Most pieces of real text
 * are repeats (23 MB of code and Markdown has 5.7 M pieces but only 93 k distinct ones), so this
 * lookup is the encoder's hot path. Open addressing; keys are copied into one pool of UTF-16 units,
 * so a hit reads the slot and the key's units and allocates nothing.
 */
export class PieceCache {
  private mask = INITIAL_SLOTS - 1;
  private slots = new Int32Array(INITIAL_SLOTS * 4);
  private pool = new Uint16Array(1 << 20);
  private poolUsed = 0;
  private multi: Int32Array[] = [];
  private count = 0;

  // Result of the last find(): the slot, and the hash insert() uses after a miss.
  private slot = 0;
  private hash = 0;

  /**
   * Looks text[start, end) up: returns its id if it is a one-token piece, -1 for a hit with several
   * tokens (read them with lastMulti()), or -2 for a miss (then call insert()).
   */
  find(text: string, start: number, end: number): number {
    const length = end - start;
    let h = 0x811c9dc5 ^ length;
    for (let i = start; i < end; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
    h = (h ^ (h >>> 15)) | 1; // never 0, which marks an empty slot
    this.hash = h;
    const { slots, pool, mask } = this;
    let s = h & mask;
    for (;;) {
      const at = s * 4;
      const stored = slots[at + HASH];
      if (stored === 0) { this.slot = s; return -2; }
      if (stored === h && slots[at + LENGTH] === length) {
        const offset = slots[at + OFFSET];
        let k = 0;
        while (k < length && pool[offset + k] === text.charCodeAt(start + k)) k++;
        if (k === length) {
          this.slot = s;
          const value = slots[at + VALUE];
          return value >= 0 ? value : -1;
        }
      }
      s = (s + 1) & mask;
    }
  }

  /** The ids of the last hit that has several tokens. */
  lastMulti(): Int32Array {
    return this.multi[-this.slots[this.slot * 4 + VALUE] - 1];
  }

  /** Adds text[start, end) after a miss from find() on the same span. */
  insert(text: string, start: number, end: number, ids: number | Int32Array): void {
    if ((this.count + 1) * 2 > this.mask + 1) {
      this.resize(this.mask + 1 < MAX_SLOTS ? (this.mask + 1) * 2 : 0);
      let s = this.hash & this.mask;
      while (this.slots[s * 4 + HASH] !== 0) s = (s + 1) & this.mask;
      this.slot = s;
    }
    const length = end - start;
    if (this.poolUsed + length > this.pool.length) {
      const bigger = new Uint16Array(Math.max(this.pool.length * 2, this.poolUsed + length));
      bigger.set(this.pool.subarray(0, this.poolUsed));
      this.pool = bigger;
    }
    const offset = this.poolUsed;
    for (let k = 0; k < length; k++) this.pool[offset + k] = text.charCodeAt(start + k);
    this.poolUsed += length;
    const at = this.slot * 4;
    this.slots[at + HASH] = this.hash;
    this.slots[at + OFFSET] = offset;
    this.slots[at + LENGTH] = length;
    if (typeof ids === 'number') this.slots[at + VALUE] = ids;
    else { this.multi.push(ids); this.slots[at + VALUE] = -this.multi.length; }
    this.count++;
  }

  /** Doubles the table (rehashing every entry), or with 0 empties it: memory stays bounded on huge corpora. */
  private resize(newSlots: number): void {
    if (newSlots === 0) {
      this.slots.fill(0);
      this.poolUsed = 0;
      this.multi = [];
      this.count = 0;
      return;
    }
    const old = this.slots;
    this.slots = new Int32Array(newSlots * 4);
    this.mask = newSlots - 1;
    for (let at = 0; at < old.length; at += 4) {
      const h = old[at + HASH];
      if (h === 0) continue;
      let s = h & this.mask;
      while (this.slots[s * 4 + HASH] !== 0) s = (s + 1) & this.mask;
      this.slots.set(old.subarray(at, at + 4), s * 4);
    }
  }
}
