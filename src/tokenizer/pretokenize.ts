import { CHAR_CLASS, SPACE } from './char-classes.js';

/*
 * A hand-written scanner equivalent to the GPT-2 / GPT-NeoX pre-tokenizer regex
 *     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * as Oniguruma runs it (leftmost alternative first, greedy). Every character is a letter, a number,
 * whitespace or "other", so the pieces cover the text with no gaps and each piece is:
 *   - a contraction ('s 't 're 've 'm 'll 'd, lower case, no word boundary needed), or
 *   - an optional single U+0020 followed by a maximal run of one class (letters, numbers, other), or
 *   - whitespace: a run that reaches the end of the text is one piece; otherwise `\s+(?!\S)` backs off
 *     one character, leaving the run's last character to start the next piece (where a plain space
 *     joins the word after it and any other whitespace character stands alone).
 * Unlike a RegExp it allocates nothing per piece, and it uses Oniguruma's character tables.
 */

/** The class of the code point at i, and its length in UTF-16 units (lone surrogates are "other"). */
function classAt(text: string, i: number, end: number): number {
  const c = text.charCodeAt(i);
  if (c < 0xd800 || c >= 0xdc00 || i + 1 >= end) return CHAR_CLASS[c];
  const d = text.charCodeAt(i + 1);
  if (d < 0xdc00 || d >= 0xe000) return CHAR_CLASS[c];
  return CHAR_CLASS[((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000];
}

function unitsAt(text: string, i: number, end: number): number {
  const c = text.charCodeAt(i);
  if (c < 0xd800 || c >= 0xdc00 || i + 1 >= end) return 1;
  const d = text.charCodeAt(i + 1);
  return d >= 0xdc00 && d < 0xe000 ? 2 : 1;
}

/** End of the maximal run of class `cls` starting at i. */
function runEnd(text: string, i: number, end: number, cls: number): number {
  while (i < end) {
    const c = text.charCodeAt(i);
    if (c < 0xd800 || c >= 0xdc00) {
      if (CHAR_CLASS[c] !== cls) return i;
      i++;
    } else {
      if (classAt(text, i, end) !== cls) return i;
      i += unitsAt(text, i, end);
    }
  }
  return end;
}

/** Whether the text at i (after an apostrophe at i-1) completes a contraction; returns its end or -1. */
function contractionEnd(text: string, i: number, end: number): number {
  if (i >= end) return -1;
  const a = text.charCodeAt(i);
  if (a === 0x73 /* s */ || a === 0x74 /* t */ || a === 0x6d /* m */ || a === 0x64 /* d */) return i + 1;
  if (i + 1 >= end) return -1;
  const b = text.charCodeAt(i + 1);
  if ((a === 0x72 /* r */ || a === 0x76 /* v */) && b === 0x65 /* e */) return i + 2;
  if (a === 0x6c /* l */ && b === 0x6c /* l */) return i + 2;
  return -1;
}

/**
 * The end of the piece that starts at `start` (start < end). Call repeatedly, each time from the
 * previous piece's end, to split text[start, end).
 */
export function pieceEnd(text: string, start: number, end: number): number {
  const c = text.charCodeAt(start);
  if (c === 0x27 /* ' */) {
    const e = contractionEnd(text, start + 1, end);
    if (e >= 0) return e;
  }
  const cls = classAt(text, start, end);
  if (cls !== SPACE) return runEnd(text, start + unitsAt(text, start, end), end, cls);

  if (c === 0x20 && start + 1 < end) {
    const next = classAt(text, start + 1, end);
    if (next !== SPACE) return runEnd(text, start + 1, end, next); // " ?X+"
  }
  const runStop = runEnd(text, start + 1, end, SPACE); // whitespace is all in the BMP: one unit each
  if (runStop === end || runStop - start === 1) return runStop;
  return runStop - 1; // \s+(?!\S): leave the last whitespace character for the next piece
}

/** All pieces of text[start, end) as strings (for tests and tools; the encoder calls pieceEnd itself). */
export function preTokenize(text: string, start = 0, end = text.length): string[] {
  const pieces: string[] = [];
  for (let i = start; i < end; ) {
    const j = pieceEnd(text, i, end);
    pieces.push(text.slice(i, j));
    i = j;
  }
  return pieces;
}
