/**
 * The iteration order of a CPython `set` of small non-negative ints (hash(i) = i), emulating
 * Objects/setobject.c: open addressing with 9 linear probes then perturbed probing, growth to the
 * next power of two above 4·used when fill (dummies included) reaches 3/5 of the table, and removals
 * leaving dummies, the last of which on an addition's probe path takes the new value (checked
 * against CPython 3.11 on random sequences of additions and removals).
 * llm-foundry iterates its few-shot indices as a set, so their order in the prompt is this order.
 */
const MIN_SIZE = 8, LINEAR_PROBES = 9, PERTURB_SHIFT = 5;
const EMPTY = -1, DUMMY = -2;

export class PythonIntSet {
  private table = new Array<number>(MIN_SIZE).fill(EMPTY);
  private fill = 0;
  private used = 0;

  static from(values: Iterable<number>): PythonIntSet {
    const set = new PythonIntSet();
    for (const v of values) set.add(v);
    return set;
  }

  get size(): number {
    return this.used;
  }

  has(value: number): boolean {
    return this.find(value) !== -1;
  }

  add(value: number): void {
    if (!(Number.isSafeInteger(value) && value >= 0)) throw new RangeError(`only non-negative integers, got ${value}`);
    const mask = this.table.length - 1;
    let i = value & mask, perturb = value, freeSlot = -1;
    for (;;) {
      const probes = i + LINEAR_PROBES <= mask ? LINEAR_PROBES : 0;
      for (let p = 0, at = i; p <= probes; p++, at++) {
        const slot = this.table[at]!;
        if (slot === EMPTY) {
          // The new value takes the last dummy passed on the way, if any (fill unchanged, no resize).
          if (freeSlot !== -1) { this.table[freeSlot] = value; this.used++; return; }
          this.table[at] = value;
          this.fill++;
          this.used++;
          if (this.fill * 5 >= mask * 3) this.resize(this.used > 50000 ? this.used * 2 : this.used * 4);
          return;
        }
        if (slot === value) return;
        if (slot === DUMMY) freeSlot = at;
      }
      perturb = Math.floor(perturb / 2 ** PERTURB_SHIFT);
      i = (i * 5 + 1 + perturb) & mask;
    }
  }

  delete(value: number): boolean {
    const at = this.find(value);
    if (at === -1) return false;
    this.table[at] = DUMMY;
    this.used--;
    return true;
  }

  /** Values in CPython's iteration order. */
  values(): number[] {
    return this.table.filter((v) => v >= 0);
  }

  private find(value: number): number {
    const mask = this.table.length - 1;
    let i = value & mask, perturb = value;
    for (;;) {
      const probes = i + LINEAR_PROBES <= mask ? LINEAR_PROBES : 0;
      for (let p = 0, at = i; p <= probes; p++, at++) {
        const slot = this.table[at]!;
        if (slot === EMPTY) return -1;
        if (slot === value) return at;
      }
      perturb = Math.floor(perturb / 2 ** PERTURB_SHIFT);
      i = (i * 5 + 1 + perturb) & mask;
    }
  }

  private resize(minUsed: number): void {
    let size = MIN_SIZE;
    while (size <= minUsed) size *= 2;
    const old = this.table;
    this.table = new Array<number>(size).fill(EMPTY);
    const mask = size - 1;
    for (const value of old) {
      if (value < 0) continue;
      // set_insert_clean: the first empty slot along the same probe sequence.
      let i = value & mask, perturb = value;
      outer: for (;;) {
        const probes = i + LINEAR_PROBES <= mask ? LINEAR_PROBES : 0;
        for (let p = 0, at = i; p <= probes; p++, at++) {
          if (this.table[at] === EMPTY) { this.table[at] = value; break outer; }
        }
        perturb = Math.floor(perturb / 2 ** PERTURB_SHIFT);
        i = (i * 5 + 1 + perturb) & mask;
      }
    }
    this.fill = this.used;
  }
}
