/**
 * JSON whose maps keep the order they were built in. A JavaScript object always lists integer-like
 * keys ("1", "2024") first, so a top_logprobs map built best first would come out reordered whenever a
 * token's text is a number. An OrderedMap is written in its own order; everything else as
 * JSON.stringify writes it.
 */
export class OrderedMap<V> {
  constructor(readonly entries: [string, V][]) {}

  /** For readers in this process that do not go through `toJson` (an unordered plain object). */
  toJSON(): Record<string, V> {
    return Object.fromEntries(this.entries);
  }
}

export function toJson(value: unknown): string {
  if (value instanceof OrderedMap) {
    return '{' + value.entries.filter(([, v]) => serializable(v)).map(([k, v]) => JSON.stringify(k) + ':' + toJson(v)).join(',') + '}';
  }
  if (value !== null && typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    return toJson((value as { toJSON(): unknown }).toJSON());
  }
  if (Array.isArray(value)) return '[' + value.map((v) => (serializable(v) ? toJson(v) : 'null')).join(',') + ']';
  if (value !== null && typeof value === 'object') {
    return '{' + Object.entries(value).filter(([, v]) => serializable(v)).map(([k, v]) => JSON.stringify(k) + ':' + toJson(v)).join(',') + '}';
  }
  return JSON.stringify(value);
}

/** What JSON.stringify leaves out of objects (and writes as null in arrays). */
const serializable = (v: unknown) => v !== undefined && typeof v !== 'function' && typeof v !== 'symbol';
