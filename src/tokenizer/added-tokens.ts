import { CHAR_CLASS, LETTER, NUMBER, SPACE } from './char-classes.js';
import type { AddedToken } from './tokenizer-file.js';

interface TrieNode {
  children: Map<number, TrieNode>;
  token?: AddedToken; // a token ends here
}

/**
 * Finds added tokens in text the way Hugging Face's AddedVocabulary does: leftmost-longest matches
 * (its Aho-Corasick automaton uses MatchKind::LeftmostLongest), left to right, not overlapping, with
 * single_word / lstrip / rstrip applied to each match. A trie over UTF-16 units and a table of
 * first units keep the common case (a character that starts no token) to one array read.
 */
export class AddedTokenMatcher {
  private readonly root: TrieNode = { children: new Map() };
  private readonly firstUnit = new Uint8Array(0x10000);
  readonly empty: boolean;

  // The last match found by next(): the span it covers (strips included) and its token id.
  matchStart = 0;
  matchEnd = 0;
  matchId = 0;

  constructor(tokens: readonly AddedToken[]) {
    for (const token of tokens) {
      let node = this.root;
      for (let i = 0; i < token.content.length; i++) {
        const unit = token.content.charCodeAt(i);
        let child = node.children.get(unit);
        if (!child) node.children.set(unit, (child = { children: new Map() }));
        node = child;
      }
      node.token ??= token; // a duplicated content keeps its first entry
      this.firstUnit[token.content.charCodeAt(0)] = 1;
    }
    this.empty = tokens.length === 0;
  }

  /**
   * Finds the next match in text[from, end) that starts at or after `from`; `floor` is where the
   * previous match ended (lstrip never reaches before it). Returns false when there is none.
   */
  next(text: string, from: number, end: number, floor: number): boolean {
    const first = this.firstUnit;
    for (let i = from; i < end; i++) {
      if (first[text.charCodeAt(i)] === 0) continue;
      let node: TrieNode | undefined = this.root;
      let found: AddedToken | undefined;
      let foundEnd = 0;
      for (let j = i; j < end; j++) {
        node = node.children.get(text.charCodeAt(j));
        if (!node) break;
        if (node.token) { found = node.token; foundEnd = j + 1; }
      }
      if (!found) continue;
      if (found.singleWord && (endsWithWordChar(text, floor, i) || startsWithWordChar(text, foundEnd, end))) continue;
      let start = i;
      let stop = foundEnd;
      if (found.lstrip) while (start > floor && isWhitespace(text.charCodeAt(start - 1))) start--;
      if (found.rstrip) while (stop < end && isWhitespace(text.charCodeAt(stop))) stop++;
      this.matchStart = start;
      this.matchEnd = stop;
      this.matchId = found.id;
      return true;
    }
    return false;
  }
}

// Whitespace and word characters for the strip and single-word rules. Hugging Face uses Rust's
// char::is_whitespace (the White_Space property, which our SPACE class matches) and the regex \w
// (letters, digits, underscore, and also combining marks, which we do not count). GPT-NeoX's file
// sets none of the three flags; with them switched on for its special tokens, a handful of strings
// gave Hugging Face's ids (by hand, not in the tests), so treat them as close, not proven.
function isWhitespace(unit: number): boolean {
  return CHAR_CLASS[unit] === SPACE;
}

function isWordUnit(unit: number): boolean {
  const cls = CHAR_CLASS[unit];
  return cls === LETTER || cls === NUMBER || unit === 0x5f; /* _ */
}

function endsWithWordChar(text: string, floor: number, i: number): boolean {
  return i > floor && isWordUnit(text.charCodeAt(i - 1));
}

function startsWithWordChar(text: string, i: number, end: number): boolean {
  return i < end && isWordUnit(text.charCodeAt(i));
}
