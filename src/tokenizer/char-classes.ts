import { LETTER_RANGES, NUMBER_RANGES, SPACE_RANGES } from './unicode-classes.js';

/** Character classes of the GPT-2 pre-tokenizer regex. */
export const OTHER = 0; // [^\s\p{L}\p{N}]
export const LETTER = 1; // \p{L}
export const NUMBER = 2; // \p{N}
export const SPACE = 3; // \s

/**
 * CHAR_CLASS[codePoint] for every code point, from Oniguruma's tables as Hugging Face uses them (see
 * unicode-classes.ts for why not JavaScript's own \p{L}). 1.1 MB, filled once per thread in ~1 ms;
 * a flat table makes the scanner's hot loop one array read per character.
 */
export const CHAR_CLASS: Uint8Array = (() => {
  const table = new Uint8Array(0x110000); // OTHER everywhere, surrogates included
  const fill = (pairs: readonly number[], cls: number) => {
    let next = 0;
    for (let i = 0; i < pairs.length; i += 2) {
      const start = next + pairs[i];
      table.fill(cls, start, start + pairs[i + 1]);
      next = start + pairs[i + 1];
    }
  };
  fill(LETTER_RANGES, LETTER);
  fill(NUMBER_RANGES, NUMBER);
  fill(SPACE_RANGES, SPACE);
  return table;
})();
