import { join } from 'node:path';
import { UserError } from '../util/errors.js';
import { AddedTokenMatcher } from './added-tokens.js';
import { BytePairEncoder } from './bpe.js';
import { tokenBytes } from './byte-level.js';
import { PieceCache } from './piece-cache.js';
import { pieceEnd } from './pretokenize.js';
import { StreamDecoder } from './stream-decoder.js';
import { readTokenizerFile, type TokenizerSpec } from './tokenizer-file.js';

// ignoreBOM: a leading U+FEFF is text to keep (a default TextDecoder would silently drop it).
const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });

/** Words longer than this (in UTF-16 units) are not cached: they rarely repeat and would bloat the cache. */
const MAX_CACHED_WORD = 64;

/**
 * GPT-NeoX-20B style byte-level BPE with the same ids as Hugging Face tokenizers (0.23): added tokens
 * split out first (raw-text ones, then NFC, then normalized ones), the GPT-2 pre-tokenizer on the
 * rest, then BPE on each piece's UTF-8 bytes. No BOS/EOS is added.
 */
export class Tokenizer {
  readonly eosId: number;
  readonly vocabSize: number;
  readonly hash: string;
  readonly file: string;

  private readonly bpe: BytePairEncoder;
  private readonly rawMatcher: AddedTokenMatcher; // tokens with normalized: false
  private readonly normalizedMatcher: AddedTokenMatcher; // tokens with normalized: true
  private readonly nfc: boolean;
  private readonly tokens: Array<string | undefined>; // id → token string
  private readonly tokenIds = new Map<string, number>(); // added tokens first, as Hugging Face looks up
  private readonly bytesById: Array<Uint8Array | undefined>;
  private readonly specialIds: Uint8Array; // 1 for ids of special added tokens
  private readonly cache = new PieceCache(); // piece → its ids

  private scratch = new Uint8Array(256);

  private constructor(spec: TokenizerSpec) {
    this.file = spec.file;
    this.hash = spec.hash;
    this.nfc = spec.nfc;
    this.bpe = new BytePairEncoder(spec.file, spec.vocab, spec.merges);
    this.rawMatcher = new AddedTokenMatcher(spec.addedTokens.filter((t) => !t.normalized));
    this.normalizedMatcher = new AddedTokenMatcher(spec.addedTokens.filter((t) => t.normalized));

    let maxId = -1;
    for (const id of spec.vocab.values()) maxId = Math.max(maxId, id);
    for (const t of spec.addedTokens) maxId = Math.max(maxId, t.id);
    this.tokens = new Array(maxId + 1);
    for (const [token, id] of spec.vocab) this.tokens[id] = token;
    for (const t of spec.addedTokens) this.tokens[t.id] = t.content;
    for (const [token, id] of spec.vocab) this.tokenIds.set(token, id);
    for (const t of spec.addedTokens) this.tokenIds.set(t.content, t.id);
    let count = 0;
    for (const t of this.tokens) if (t !== undefined) count++;
    this.vocabSize = count;

    this.bytesById = this.tokens.map((t) => (t === undefined ? undefined : tokenBytes(t)));
    this.specialIds = new Uint8Array(maxId + 1);
    for (const t of spec.addedTokens) if (t.special) this.specialIds[t.id] = 1;

    const eos = this.tokenIds.get('<|endoftext|>');
    if (eos === undefined) throw new UserError(`${spec.file}: no <|endoftext|> token, so no end-of-text id`);
    this.eosId = eos;
  }

  /** Load a Hugging Face tokenizer.json (byte-level BPE); a bad file is a FormatError naming the field. */
  static fromFile(tokenizerJsonPath: string): Tokenizer {
    return new Tokenizer(readTokenizerFile(tokenizerJsonPath));
  }

  /** Load modelDir/tokenizer.json. */
  static fromFolder(modelDir: string): Tokenizer {
    return Tokenizer.fromFile(join(modelDir, 'tokenizer.json'));
  }

  /** Token ids of text, without BOS/EOS. */
  encode(text: string): number[] {
    const out: number[] = [];
    this.encodeInto(text, out);
    return out;
  }

  /** Appends the ids of text to out. */
  encodeInto(text: string, out: number[]): void {
    const matcher = this.rawMatcher;
    let pos = 0;
    if (!matcher.empty) {
      while (matcher.next(text, pos, text.length, pos)) {
        if (matcher.matchStart > pos) this.encodeNormalizable(text.slice(pos, matcher.matchStart), out);
        out.push(matcher.matchId);
        pos = matcher.matchEnd;
      }
    }
    if (pos < text.length) this.encodeNormalizable(pos === 0 ? text : text.slice(pos), out);
  }

  /** Text between raw-text added tokens: normalize, split out normalized added tokens, BPE the rest. */
  private encodeNormalizable(part: string, out: number[]): void {
    const text = this.nfc ? part.normalize('NFC') : part;
    const matcher = this.normalizedMatcher;
    let pos = 0;
    if (!matcher.empty) {
      while (matcher.next(text, pos, text.length, pos)) {
        if (matcher.matchStart > pos) this.encodePieces(text, pos, matcher.matchStart, out);
        out.push(matcher.matchId);
        pos = matcher.matchEnd;
      }
    }
    if (pos < text.length) this.encodePieces(text, pos, text.length, out);
  }

  private encodePieces(text: string, start: number, end: number, out: number[]): void {
    const cache = this.cache;
    for (let i = start; i < end; ) {
      const j = pieceEnd(text, i, end);
      if (j - i <= MAX_CACHED_WORD) {
        let id = cache.find(text, i, j);
        if (id === -2) {
          const ids = this.bpeWord(text.slice(i, j));
          cache.insert(text, i, j, ids);
          id = typeof ids === 'number' ? ids : -1;
        }
        if (id >= 0) out.push(id);
        else {
          const ids = cache.lastMulti();
          for (let k = 0; k < ids.length; k++) out.push(ids[k]);
        }
      } else {
        const ids = this.bpeWord(text.slice(i, j));
        if (typeof ids === 'number') out.push(ids);
        else for (let k = 0; k < ids.length; k++) out.push(ids[k]);
      }
      i = j;
    }
  }

  /** BPE of one piece: its UTF-8 bytes (lone surrogates as U+FFFD, as any UTF-8 encoder writes them). */
  private bpeWord(piece: string): number | Int32Array {
    if (this.scratch.length < piece.length * 3) this.scratch = new Uint8Array(piece.length * 3);
    const bytes = this.scratch;
    let n = 0;
    for (let i = 0; i < piece.length; i++) {
      let c = piece.charCodeAt(i);
      if (c < 0x80) { bytes[n++] = c; continue; }
      if (c < 0x800) { bytes[n++] = 0xc0 | (c >> 6); bytes[n++] = 0x80 | (c & 63); continue; }
      if (c >= 0xd800 && c < 0xe000) {
        const d = i + 1 < piece.length ? piece.charCodeAt(i + 1) : 0;
        if (c < 0xdc00 && d >= 0xdc00 && d < 0xe000) {
          const cp = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
          bytes[n++] = 0xf0 | (cp >> 18);
          bytes[n++] = 0x80 | ((cp >> 12) & 63);
          bytes[n++] = 0x80 | ((cp >> 6) & 63);
          bytes[n++] = 0x80 | (cp & 63);
          i++;
          continue;
        }
        c = 0xfffd;
      }
      bytes[n++] = 0xe0 | (c >> 12);
      bytes[n++] = 0x80 | ((c >> 6) & 63);
      bytes[n++] = 0x80 | (c & 63);
    }
    if (n === 1) return this.bpe.byteIds[bytes[0]];
    const ids = this.bpe.encodeBytes(bytes, n);
    return ids.length === 1 ? ids[0] : ids;
  }

  /** The bytes of a token as the decoder writes them; throws a UserError for an id with no token. */
  tokenBytes(id: number): Uint8Array {
    const bytes = Number.isInteger(id) ? this.bytesById[id] : undefined;
    if (bytes === undefined) {
      throw new UserError(`token id ${id} is not in the tokenizer's vocabulary (ids 0..${this.tokens.length - 1}, ${this.file})`);
    }
    return bytes;
  }

  isSpecial(id: number): boolean {
    return this.specialIds[id] === 1;
  }

  /** Text of ids. Invalid UTF-8 (a sequence cut inside a character) becomes U+FFFD, as in Hugging Face. */
  decode(ids: ArrayLike<number>, options?: { skipSpecialTokens?: boolean }): string {
    const skip = options?.skipSpecialTokens ?? false;
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const bytes = this.tokenBytes(ids[i]);
      if (skip && this.specialIds[ids[i]] === 1) continue;
      parts.push(bytes);
      total += bytes.length;
    }
    const all = new Uint8Array(total);
    let at = 0;
    for (const p of parts) { all.set(p, at); at += p.length; }
    return utf8Decoder.decode(all);
  }

  /** The vocabulary string of an id (byte-level form, e.g. "Ġworld"), or undefined. */
  idToToken(id: number): string | undefined {
    return Number.isInteger(id) && id >= 0 ? this.tokens[id] : undefined;
  }

  tokenToId(token: string): number | undefined {
    return this.tokenIds.get(token);
  }

  /** For streaming generation: push ids one at a time, get back only complete characters. */
  streamDecoder(options?: { skipSpecialTokens?: boolean }): StreamDecoder {
    return new StreamDecoder(this, options?.skipSpecialTokens ?? false);
  }
}
