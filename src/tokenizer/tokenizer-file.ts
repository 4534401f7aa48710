import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { FormatError, UserError } from '../util/errors.js';

/** One entry of tokenizer.json's `added_tokens`, with Hugging Face's defaults filled in. */
export interface AddedToken {
  id: number;
  content: string;
  special: boolean; // dropped by decode(..., { skipSpecialTokens: true })
  normalized: boolean; // matched in the normalized text (true) or in the raw text (false)
  lstrip: boolean; // swallows whitespace on its left
  rstrip: boolean; // swallows whitespace on its right
  singleWord: boolean; // matches only when not inside a word
}

/** What the engine needs from a byte-level BPE tokenizer.json, checked. */
export interface TokenizerSpec {
  file: string;
  hash: string; // sha256 hex of the file's bytes
  vocab: Map<string, number>; // model vocabulary: byte-level token string → id
  merges: Array<[string, string]>; // in rank order (rank = index)
  addedTokens: AddedToken[];
  nfc: boolean; // normalizer NFC (the only normalizer GPT-NeoX-style files use)
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isId = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < 2 ** 31;

/** Read and check a Hugging Face tokenizer.json; anything we cannot run exactly is refused by name. */
export function readTokenizerFile(path: string): TokenizerSpec {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(`cannot read tokenizer file ${path}: ${code === 'ENOENT' ? 'no such file' : String(e)}`);
  }
  let root: unknown;
  try {
    root = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new FormatError(path, `not valid JSON (${(e as Error).message})`);
  }
  return parseTokenizerJson(path, root, createHash('sha256').update(bytes).digest('hex'));
}

export function parseTokenizerJson(file: string, root: unknown, hash: string): TokenizerSpec {
  const fail = (problem: string): never => { throw new FormatError(file, problem); };
  if (!isObject(root)) fail('expected a JSON object at the top level');
  const top = root as Json;

  const model = top.model;
  if (!isObject(model)) fail('missing "model" object');
  const m = model as Json;
  if (m.type !== undefined && m.type !== 'BPE') fail(`model.type is ${JSON.stringify(m.type)}; only "BPE" is supported`);
  for (const [key, ok] of [
    ['dropout', (v: unknown) => v === null || v === undefined || v === 0],
    ['continuing_subword_prefix', (v: unknown) => v === null || v === undefined || v === ''],
    ['end_of_word_suffix', (v: unknown) => v === null || v === undefined || v === ''],
    ['byte_fallback', (v: unknown) => v === undefined || v === false],
    ['ignore_merges', (v: unknown) => v === undefined || v === false],
  ] as const) {
    if (!ok(m[key])) fail(`model.${key} = ${JSON.stringify(m[key])} is not supported (byte-level BPE without it only)`);
  }

  if (!isObject(m.vocab)) fail('model.vocab must be an object of token → id');
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(m.vocab as Json)) {
    if (!isId(id)) fail(`model.vocab[${JSON.stringify(token)}] = ${JSON.stringify(id)} is not a non-negative integer id`);
    vocab.set(token, id as number);
  }
  if (vocab.size === 0) fail('model.vocab is empty');

  if (!Array.isArray(m.merges)) fail('model.merges must be an array');
  const merges: Array<[string, string]> = [];
  (m.merges as unknown[]).forEach((entry, i) => {
    let pair: [string, string] | undefined;
    if (typeof entry === 'string') {
      const parts = entry.split(' ');
      if (parts.length === 2) pair = [parts[0], parts[1]];
    } else if (Array.isArray(entry) && entry.length === 2 && typeof entry[0] === 'string' && typeof entry[1] === 'string') {
      pair = [entry[0], entry[1]];
    }
    if (!pair) return fail(`model.merges[${i}] = ${JSON.stringify(entry)} is not "a b" or ["a", "b"]`);
    for (const part of [pair[0], pair[1], pair[0] + pair[1]]) {
      if (!vocab.has(part)) fail(`model.merges[${i}] (${JSON.stringify(entry)}): ${JSON.stringify(part)} is not in model.vocab`);
    }
    merges.push(pair);
  });

  const addedTokens: AddedToken[] = [];
  if (top.added_tokens !== undefined && top.added_tokens !== null) {
    if (!Array.isArray(top.added_tokens)) fail('added_tokens must be an array');
    (top.added_tokens as unknown[]).forEach((t, i) => {
      if (!isObject(t)) return fail(`added_tokens[${i}] must be an object`);
      if (!isId(t.id)) fail(`added_tokens[${i}].id = ${JSON.stringify(t.id)} is not a non-negative integer`);
      if (typeof t.content !== 'string' || t.content === '') fail(`added_tokens[${i}].content must be a non-empty string`);
      const flag = (name: string, fallback: boolean): boolean => {
        const v = t[name];
        if (v === undefined) return fallback;
        if (typeof v !== 'boolean') fail(`added_tokens[${i}].${name} must be true or false`);
        return v as boolean;
      };
      const special = flag('special', false);
      addedTokens.push({
        id: t.id as number,
        content: t.content as string,
        special,
        // Hugging Face's default: special tokens are matched in the raw text, others after normalizing.
        normalized: flag('normalized', !special),
        lstrip: flag('lstrip', false),
        rstrip: flag('rstrip', false),
        singleWord: flag('single_word', false),
      });
    });
  }

  const normalizer = top.normalizer;
  let nfc = false;
  if (normalizer !== null && normalizer !== undefined) {
    if (!isObject(normalizer) || normalizer.type !== 'NFC') {
      fail(`normalizer ${JSON.stringify(normalizer)} is not supported (only NFC or none)`);
    }
    nfc = true;
  }

  const pre = top.pre_tokenizer;
  if (!isObject(pre) || pre.type !== 'ByteLevel') fail(`pre_tokenizer must be ByteLevel, found ${JSON.stringify(pre)}`);
  const p = pre as Json;
  if (p.add_prefix_space === true) fail('pre_tokenizer.add_prefix_space = true is not supported');
  if (p.use_regex === false) fail('pre_tokenizer.use_regex = false is not supported');

  const decoder = top.decoder;
  if (!isObject(decoder) || decoder.type !== 'ByteLevel') fail(`decoder must be ByteLevel, found ${JSON.stringify(decoder)}`);

  return { file, hash, vocab, merges, addedTokens, nfc };
}
