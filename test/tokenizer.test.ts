import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fixture } from './fixtures.js';
import { encodeParallel, preTokenize, Tokenizer, TokenizerPool } from '../src/tokenizer/index.js';
import { CHAR_CLASS, LETTER, NUMBER, OTHER, SPACE } from '../src/tokenizer/char-classes.js';
import { FormatError, UserError } from '../src/util/errors.js';

const tokenizerPath = fixture('mosaic-gpt-tiny', 'tokenizer.json');
const tokenizer = Tokenizer.fromFile(tokenizerPath);

interface Case { text: string; ids: number[]; decoded: string }
const cases = (JSON.parse(readFileSync(fixture('tokenizer-cases.json'), 'utf8')) as { cases: Case[] }).cases;

/** A small deterministic generator (mulberry32) so random tests are reproducible. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('fixture cases (Hugging Face tokenizers 0.23.2)', () => {
  test(`all ${cases.length} cases give the same ids and decode back to "decoded"`, () => {
    assert.ok(cases.length >= 40);
    for (const c of cases) {
      assert.deepEqual(tokenizer.encode(c.text), c.ids, `encode(${JSON.stringify(c.text)})`);
      assert.equal(tokenizer.decode(c.ids), c.decoded, `decode of ${JSON.stringify(c.text)}`);
    }
  });

  test('encodeParallel gives the same ids as the fixtures', async () => {
    const got = await encodeParallel(tokenizerPath, cases.map((c) => c.text), { threads: 2 });
    assert.deepEqual(got, cases.map((c) => c.ids));
  });
});

describe('encode and decode', () => {
  test('round trip: decode(encode(text)) is the NFC form of text', () => {
    const texts = [
      '', 'a', ' ', '  leading and trailing  ', 'tabs\tand\nnewlines\r\n\r\n', 'x'.repeat(5000),
      "it's they're we've I'm you'll he'd 'S 'RE", 'emoji 👩‍💻🎉 and flags 🇫🇷', 'Cafe\u0301 ﬁ ½ ²',
      '中文 日本語 한국어 العربية עברית ไทย', 'zero\u200bwidth', '\u3000ideographic space\u00a0nbsp',
      'function f(a, b) {\n    return a + b; // sum\n}\n', '<|endoftext|>x<|padding|>y<|endoftext',
    ];
    for (const text of texts) assert.equal(tokenizer.decode(tokenizer.encode(text)), text.normalize('NFC'), JSON.stringify(text));
  });

  test('a lone surrogate is encoded as U+FFFD, as Hugging Face receives it', () => {
    assert.deepEqual(tokenizer.encode('a\ud800b'), tokenizer.encode('a\ufffdb'));
  });

  test('a leading U+FEFF survives decoding (no BOM stripping)', () => {
    assert.equal(tokenizer.decode(tokenizer.encode('\ufeffhello')), '\ufeffhello');
  });

  test('runs of spaces use the added whitespace tokens 50254..50276', () => {
    assert.deepEqual(tokenizer.encode('a  b'), [66, 50276, 67]);
    const ids = tokenizer.encode(' '.repeat(30) + 'b');
    assert.equal(ids[0], 50254); // 24 spaces first (leftmost-longest), then 6
    assert.equal(ids[1], 50272); // n spaces is id 50278 - n
    assert.equal(tokenizer.idToToken(50272), ' '.repeat(6));
    assert.equal(ids.length, 3);
  });
});

describe('special tokens and vocabulary', () => {
  test('EOS, vocabulary size, hash', () => {
    assert.equal(tokenizer.eosId, 0);
    assert.equal(tokenizer.vocabSize, 50277);
    assert.match(tokenizer.hash, /^[0-9a-f]{64}$/);
    assert.equal(Tokenizer.fromFolder(fixture('mosaic-gpt-tiny')).hash, tokenizer.hash);
  });

  test('special tokens in text become their ids; skipSpecialTokens drops them on decode', () => {
    const ids = tokenizer.encode('Hello<|endoftext|>world<|padding|>');
    assert.deepEqual(ids, [12092, 0, 10186, 1]);
    assert.equal(tokenizer.decode(ids), 'Hello<|endoftext|>world<|padding|>');
    assert.equal(tokenizer.decode(ids, { skipSpecialTokens: true }), 'Helloworld');
    // The whitespace tokens are added but not special: they stay.
    assert.equal(tokenizer.decode([66, 50276, 67], { skipSpecialTokens: true }), 'a  b');
  });

  test('idToToken / tokenToId', () => {
    assert.equal(tokenizer.idToToken(0), '<|endoftext|>');
    assert.equal(tokenizer.tokenToId('<|padding|>'), 1);
    assert.equal(tokenizer.idToToken(1533), 'Ġworld');
    assert.equal(tokenizer.tokenToId('Ġworld'), 1533);
    assert.equal(tokenizer.idToToken(50277), undefined);
    assert.equal(tokenizer.idToToken(-1), undefined);
    assert.equal(tokenizer.tokenToId('no such token'), undefined);
  });

  test('an id outside the vocabulary is a clear error in decode and in streaming decode', () => {
    for (const bad of [50277, 99999, -1, 1.5]) {
      assert.throws(() => tokenizer.decode([12092, bad]), (e: Error) => e instanceof UserError && e.message.includes(`token id ${bad} `));
    }
    assert.throws(() => tokenizer.streamDecoder().push(50432), UserError);
  });
});

describe('streaming decode', () => {
  test('multi-byte characters split across tokens come out whole, and the stream equals decode()', () => {
    const text = 'Grüße 👩‍💻 中文字符 🎉🎉 ok';
    const ids = tokenizer.encode(text);
    const stream = tokenizer.streamDecoder();
    const chunks = ids.map((id) => stream.push(id));
    chunks.push(stream.flush());
    assert.ok(chunks.some((c) => c === ''), 'some character must be split over tokens for this test to mean anything');
    const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
    for (const c of chunks) assert.ok(!c.includes('\ufffd') && !loneSurrogate.test(c), `chunk ${JSON.stringify(c)}`);
    assert.equal(chunks.join(''), text);
  });

  test('an unfinished character at the end becomes U+FFFD on flush, like decode()', () => {
    const emoji = tokenizer.encode('🎉');
    assert.ok(emoji.length > 1);
    const partial = emoji.slice(0, -1);
    const stream = tokenizer.streamDecoder();
    const text = partial.map((id) => stream.push(id)).join('') + stream.flush();
    assert.equal(text, tokenizer.decode(partial));
    assert.ok(text.endsWith('\ufffd'));
  });

  test('skipSpecialTokens in the stream', () => {
    const stream = tokenizer.streamDecoder({ skipSpecialTokens: true });
    assert.equal([12092, 0, 1533].map((id) => stream.push(id)).join('') + stream.flush(), 'Hello world');
  });
});

describe('pre-tokenizer and BPE against independent references', () => {
  // The GPT-2 pattern itself, run by V8. V8's Unicode tables are newer than Oniguruma's, so the
  // alphabet sticks to characters both agree on; the scanner must then split exactly like the regex.
  const gpt2 = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
  const alphabet = [...'aZé中ß 1٣½ \t\n\r\u3000\u00a0\u2028\'\'\'s t r e v l m d.,;!?-_(){}"<>|🎉👩𝔸𝟙\u0301\u200b'];

  test('the scanner splits 3000 random strings exactly as the GPT-2 regex does', () => {
    const next = random(1);
    for (let n = 0; n < 3000; n++) {
      let s = '';
      const len = Math.floor(next() * 40);
      for (let i = 0; i < len; i++) s += alphabet[Math.floor(next() * alphabet.length)];
      assert.deepEqual(preTokenize(s), s.match(gpt2) ?? [], JSON.stringify(s));
    }
  });

  test('character classes agree with V8 except where Oniguruma is older (and on U+0085, U+FEFF)', () => {
    const L = /\p{L}/u, N = /\p{N}/u, S = /\s/u;
    const odd: string[] = [];
    for (let cp = 0; cp < 0x110000; cp++) {
      if (cp >= 0xd800 && cp < 0xe000) continue;
      const c = String.fromCodePoint(cp);
      const v8 = L.test(c) ? LETTER : N.test(c) ? NUMBER : S.test(c) ? SPACE : OTHER;
      const ours = CHAR_CLASS[cp];
      // A character newer than Oniguruma's tables is "other" to it, whatever V8 says.
      if (ours !== v8 && !(ours === OTHER && (v8 === LETTER || v8 === NUMBER))) odd.push(cp.toString(16));
    }
    assert.deepEqual(odd, ['85', 'feff']);
    assert.equal(CHAR_CLASS[0x85], SPACE);
    assert.equal(CHAR_CLASS[0xfeff], OTHER);
  });

  test('BPE merges match a naive lowest-rank-first reference on random words, long ones included', () => {
    const json = JSON.parse(readFileSync(tokenizerPath, 'utf8')) as { model: { vocab: Record<string, number>; merges: string[] } };
    const rank = new Map(json.model.merges.map((m, i) => [m, i]));
    const vocab = json.model.vocab;
    const byteChar = (b: number) => tokenizer.idToToken(tokenizer.encode(String.fromCharCode(b))[0])!;
    // Naive BPE over token strings: merge the lowest-ranked adjacent pair (leftmost on ties), repeat.
    const naive = (piece: string): number[] => {
      let syms = [...Buffer.from(piece, 'utf8')].map((b) => (b < 0x80 ? byteChar(b) : ''));
      if (syms.includes('')) return []; // only ASCII words here: byteChar needs a one-byte character
      for (;;) {
        let best = -1, bestRank = Infinity;
        for (let i = 0; i + 1 < syms.length; i++) {
          const r = rank.get(`${syms[i]} ${syms[i + 1]}`);
          if (r !== undefined && r < bestRank) { bestRank = r; best = i; }
        }
        if (best < 0) return syms.map((s) => vocab[s]);
        syms = [...syms.slice(0, best), syms[best] + syms[best + 1], ...syms.slice(best + 2)];
      }
    };
    const next = random(7);
    const letters = 'etaoinshrdlucmfwypvbgkqjxz';
    const puncts = '=-*#/.,;:!?()[]{}<>"\'`~^%$&|+_@\\';
    for (let n = 0; n < 400; n++) {
      const long = n % 10 === 0;
      const len = 1 + Math.floor(next() * (long ? 300 : 14));
      const from = n % 2 === 0 ? letters : puncts;
      let word = '';
      for (let i = 0; i < len; i++) word += from[Math.floor(next() * (n % 4 < 2 ? 4 : from.length))];
      assert.deepEqual(tokenizer.encode(word), naive(word), JSON.stringify(word));
    }
  });
});

describe('parallel encoding', () => {
  test('a pool gives the same ids as encode() for many texts and for one long text cut over workers', async () => {
    const next = random(3);
    const lines: string[] = [];
    for (let i = 0; i < 40000; i++) {
      const indent = ' '.repeat(Math.floor(next() * 9));
      lines.push(`${indent}${['const', 'x', 'return', '//', '', 'Über', '12'][i % 7]} item${i} = f(${i}, "é");${i % 5 === 0 ? '\n' : ''}`);
    }
    const long = lines.join('\n'); // ~1.3 M units: more than one cut
    const texts = [long, ...lines.slice(0, 200), '', '<|endoftext|>'];
    const pool = await TokenizerPool.open(tokenizerPath, { threads: 2 });
    try {
      const got = await pool.encodeBatch(texts);
      assert.equal(got.length, texts.length);
      texts.forEach((t, i) => assert.deepEqual(got[i], tokenizer.encode(t), `text ${i}`));
    } finally {
      await pool.close();
    }
  });
});

describe('bad tokenizer files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-tokenizer-test-'));
  const good = JSON.parse(readFileSync(tokenizerPath, 'utf8')) as Record<string, any>;
  const write = (name: string, content: string) => {
    const path = join(dir, name);
    writeFileSync(path, content);
    return path;
  };
  const variant = (name: string, change: (j: Record<string, any>) => void) => {
    const j = structuredClone(good);
    change(j);
    return write(name, JSON.stringify(j));
  };

  test('missing file', () => {
    assert.throws(() => Tokenizer.fromFile(join(dir, 'nope.json')), (e: Error) => e instanceof UserError && /no such file/.test(e.message));
    assert.throws(() => Tokenizer.fromFolder(dir), UserError);
  });

  const bad: Array<[string, () => string, RegExp]> = [
    ['not JSON', () => write('a.json', '{"model": '), /not valid JSON/],
    ['no model', () => variant('b.json', (j) => delete j.model), /missing "model"/],
    ['wrong model type', () => variant('c.json', (j) => (j.model.type = 'WordPiece')), /model\.type .*BPE/],
    ['bad vocab id', () => variant('d.json', (j) => (j.model.vocab.hello = 'x')), /model\.vocab\["hello"\]/],
    ['merge of unknown tokens', () => variant('e.json', (j) => (j.model.merges[5] = 'qqq zzz')), /model\.merges\[5\].*"qqq" is not in model\.vocab/],
    ['malformed merge', () => variant('f.json', (j) => (j.model.merges[2] = 'a b c')), /model\.merges\[2\]/],
    ['missing byte token', () => variant('g.json', (j) => { j.model.merges = []; delete j.model.vocab['Ġ']; }), /no token for byte 0x20/],
    ['bad added token', () => variant('h.json', (j) => (j.added_tokens[0].id = -3)), /added_tokens\[0\]\.id/],
    ['unsupported normalizer', () => variant('i.json', (j) => (j.normalizer = { type: 'Lowercase' })), /normalizer .* not supported/],
    ['unsupported pre-tokenizer', () => variant('j.json', (j) => (j.pre_tokenizer = { type: 'Whitespace' })), /pre_tokenizer must be ByteLevel/],
    ['BPE dropout', () => variant('k.json', (j) => (j.model.dropout = 0.1)), /model\.dropout/],
  ];
  for (const [name, make, message] of bad) {
    test(`${name}: a FormatError that names the file and the field`, () => {
      const path = make();
      assert.throws(() => Tokenizer.fromFile(path), (e: Error) => e instanceof FormatError && e.message.startsWith(path) && message.test(e.message));
    });
  }

  test('a pool reports a bad file from open(), not from a worker', async () => {
    const path = write('l.json', '[1, 2]');
    await assert.rejects(TokenizerPool.open(path, { threads: 1 }), FormatError);
  });
});
