// In-context learning: the picks of `evaluateIclTasks` against picks computed here, each candidate
// run alone through `forward` and scored with a log-softmax written here; llm-foundry's prompt
// layout and few-shot draws (recorded from CPython's `random` with seed 1234); bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CpuBackend } from '../src/backend/cpu/index.js';
import type { MptModel } from '../src/model/mpt.js';
import { Tokenizer } from '../src/tokenizer/index.js';
import { buildItems, evaluateIclTasks, loadIclTasks, readIclDataset, type IclResult } from '../src/eval/index.js';
import { PythonRandom } from '../src/eval/icl/python-random.js';
import { PythonIntSet } from '../src/eval/icl/python-int-set.js';
import { fewshotIndices } from '../src/eval/icl/fewshot.js';
import { ConfigError, FormatError, UserError } from '../src/util/errors.js';
import { fixture, projectRoot } from './fixtures.js';
import { fixtureModel } from './fixture-model.js';

const tiny = fixture('mosaic-gpt-tiny');
const data = join(projectRoot, 'test', 'data', 'eval');
const backend = new CpuBackend();
const tokenizer = Tokenizer.fromFolder(tiny);
const model = (): Promise<MptModel> => fixtureModel('mosaic-gpt-tiny', backend);

/** Few-shot indices llm-foundry draws with fewshot_random_seed 1234, recorded from CPython 3.11. */
const CPYTHON_SHOTS: Record<string, number[][]> = {
  '4x2': [[2, 3], [0, 2], [1, 3], [0, 1]],
  '3x1': [[1], [0], [0]],
  '2x1': [[1], [0]],
};

const lines = (file: string) => readFileSync(resolve(data, file), 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));

/** Mean log-probability of `answer`'s tokens after `prefix`, and whether greedy decoding gives them. */
function scoreByHand(m: MptModel, prefix: number[], answer: number[]): { mean: number; greedy: boolean } {
  const ids = Int32Array.from([...prefix, ...answer]);
  const vocab = m.config.vocabSize;
  const logits = backend.download(m.forward(ids, m.newCache(1, ids.length))) as Float32Array;
  let sum = 0, greedy = true;
  for (let j = prefix.length; j < ids.length; j++) {
    const row = logits.subarray((j - 1) * vocab, j * vocab);
    let max = -Infinity, arg = -1;
    row.forEach((v, i) => { if (v > max) { max = v; arg = i; } });
    let z = 0;
    for (const v of row) z += Math.exp(v - max);
    sum += row[ids[j]!]! - max - Math.log(z);
    greedy &&= arg === ids[j];
  }
  return { mean: sum / answer.length, greedy };
}

/** The picks the test expects: prompts written out from llm-foundry's rules, candidates scored alone. */
function expectedPicks(m: MptModel, file: string, type: string, shots: number[][] | null, fmt: { prompt: string; ex: string; cd: string }): number[] {
  const rows = lines(file);
  return rows.map((row, i) => {
    let preamble = fmt.prompt;
    for (const s of shots?.[i] ?? []) {
      const r = rows[s];
      const [ctx, ans] = type === 'language_modeling' ? [r.context, r.continuation]
        : type === 'multiple_choice' ? [r.query, r.choices[r.gold]] : [r.context_options[r.gold], r.continuation];
      preamble += `${preamble ? fmt.ex : ''}${ctx.trim()}${fmt.cd}${ans.trim()}`;
    }
    const pre = tokenizer.encode(preamble);
    const cand = (context: string, answer: string) => scoreByHand(m, [...pre, ...tokenizer.encode(context)], tokenizer.encode(` ${answer.trim()}`));
    if (type === 'language_modeling') return cand(`${preamble ? fmt.ex : ''}${row.context}${fmt.cd}`.trimEnd(), row.continuation).greedy ? 0 : -1;
    const scores = type === 'multiple_choice'
      ? row.choices.map((c: string) => cand(`${preamble ? fmt.ex : ''}${row.query}${fmt.cd}`.trimEnd(), c))
      : row.context_options.map((c: string) => cand(preamble ? `${fmt.ex}${c}${fmt.cd.trimEnd()}` : c, row.continuation));
    let best = 0;
    scores.forEach((s: { mean: number }, k: number) => { if (s.mean > scores[best].mean) best = k; });
    return best;
  });
}

function find(results: IclResult[], name: string): IclResult {
  const r = results.find((x) => x.name === name);
  assert.ok(r, `no result ${name}; got ${results.map((x) => x.name).join(', ')}`);
  return r;
}

test("CPython's random and set order: sample, choice and few-shot draws as llm-foundry makes them", () => {
  const rng = new PythonRandom(1234);
  // random.Random(1234): sample(range(10), 3), sample(range(100), 7), choice(range(10)), recorded from CPython 3.11.
  assert.deepEqual(rng.sampleRange(10, 3), [7, 1, 0]);
  assert.deepEqual(rng.sampleRange(100, 7), [11, 74, 4, 85, 88, 10, 12]);
  assert.equal(rng.choiceRange(10), 5);
  const zero = new PythonRandom(0);
  assert.deepEqual([zero.getrandbits(32), zero.getrandbits(32)], [3626764237, 1654615998]);
  // list(set([11, 74, 4, 85, 88, 10, 12])) in CPython 3.11 (hash collisions and a resize).
  assert.deepEqual(PythonIntSet.from([11, 74, 4, 85, 88, 10, 12]).values(), [4, 74, 11, 10, 12, 85, 88]);
  for (const [key, expected] of Object.entries(CPYTHON_SHOTS)) {
    const [size, k] = key.split('x').map(Number);
    const draws = new PythonRandom(1234);
    assert.deepEqual(expected.map((_, i) => fewshotIndices(size!, k!, i, draws)), expected, key);
  }
  const big = new PythonRandom(1234);
  assert.deepEqual(fewshotIndices(1000, 10, 0, big), [961, 451, 932, 965, 7, 92, 119, 826, 796, 989]);
  assert.deepEqual(fewshotIndices(1000, 10, 1, big), [35, 100, 709, 363, 687, 784, 17, 242, 596, 85]);
});

test('prompts: the text llm-foundry builds (prompt string, few-shot answers, delimiters, stripped context, spaced answer)', () => {
  const examples = readIclDataset(join(data, 'mc.jsonl'), 'multiple_choice', false);
  const items = buildItems(examples, tokenizer, {
    promptString: 'Pick the sensible ending.', exampleDelimiter: '\n\n', continuationDelimiter: '\nAnswer: ',
    numFewshot: 2, seed: 1234, maxSeqLen: 256, file: 'mc.jsonl',
  });
  const first = items[0]!.candidates[0]!;
  const text = 'Pick the sensible ending.\n\nTo open a locked door you need a\nAnswer: key\n\nThe sun rises in the\nAnswer: east'
    + '\n\nTo dry wet hair quickly, you should\nAnswer:';
  assert.equal(tokenizer.decode(Array.from(first.ids).slice(0, first.from)), text);
  assert.deepEqual(Array.from(first.ids).slice(first.from), tokenizer.encode(' use a hair dryer on a warm setting'));
  assert.equal(items[0]!.candidates.length, 3);
  // Too long: the context is cut from the left to fit max_seq_len, the answer kept whole.
  const cut = buildItems(examples, tokenizer, { promptString: '', exampleDelimiter: '\n', continuationDelimiter: ' ', numFewshot: 3, seed: 1, maxSeqLen: 12, file: 'mc.jsonl' });
  for (const c of cut.flatMap((i) => i.candidates)) assert.ok(c.ids.length <= 12);
});

test('ICL accuracy: picks equal those computed independently for every task type, shots and category', async () => {
  const m = await model();
  const tasks = loadIclTasks(join(data, 'tasks.yaml'));
  const results = evaluateIclTasks(m, tokenizer, tasks, { batchSize: 3 });
  assert.deepEqual(results.map((r) => r.name), [
    'lm_small/0-shot', 'lm_small/2-shot', 'mc_small/0-shot', 'mc_small/2-shot', 'schema_small/0-shot', 'schema_small/1-shot',
    'categorized/1-shot/colors', 'categorized/1-shot/math',
  ]);
  const plain = { prompt: '', ex: '\n', cd: ' ' };
  const mc = { prompt: 'Pick the sensible ending.', ex: '\n\n', cd: '\nAnswer: ' };
  const cases: [string, string, string, number[][] | null, typeof plain][] = [
    ['lm_small/0-shot', 'lm.jsonl', 'language_modeling', null, plain],
    ['lm_small/2-shot', 'lm.jsonl', 'language_modeling', CPYTHON_SHOTS['4x2']!, plain],
    ['mc_small/0-shot', 'mc.jsonl', 'multiple_choice', null, mc],
    ['mc_small/2-shot', 'mc.jsonl', 'multiple_choice', CPYTHON_SHOTS['4x2']!, mc],
    ['schema_small/0-shot', 'schema.jsonl', 'schema', null, plain],
    ['schema_small/1-shot', 'schema.jsonl', 'schema', CPYTHON_SHOTS['3x1']!, plain],
  ];
  for (const [name, file, type, shots, fmt] of cases) {
    const r = find(results, name);
    const expected = expectedPicks(m, file, type, shots, fmt);
    assert.deepEqual(r.picks, expected, name);
    const gold = lines(file).map((row) => row.gold ?? 0);
    assert.equal(r.correct, expected.filter((p, i) => p === gold[i]).length, name);
    assert.equal(r.total, gold.length);
    assert.equal(r.accuracy, r.correct / r.total);
  }
  // Categories are separate sub-tasks: few-shot examples come from the same category.
  const all = lines('categories.jsonl');
  for (const [category, key] of [['colors', '2x1'], ['math', '3x1']] as const) {
    const rows = all.filter((row) => row.category === category);
    const dir = mkdtempSync(join(tmpdir(), 'mpt-icl-'));
    writeFileSync(join(dir, 'part.jsonl'), rows.map((row) => JSON.stringify(row)).join('\n'));
    const expected = expectedPicks(m, join(dir, 'part.jsonl'), 'multiple_choice', CPYTHON_SHOTS[key]!, plain);
    assert.deepEqual(find(results, `categorized/1-shot/${category}`).picks, expected, category);
  }
});

test('language modeling counts a continuation right exactly when greedy decoding produces it', async () => {
  const m = await model();
  // Find a context whose greedy next token is a word with a leading space that re-encodes to itself.
  const contexts = ['Once upon a time', 'The weather today is', 'My favourite food is', 'In the beginning', 'She opened the door and'];
  let made: { context: string; word: string } | undefined;
  for (const context of contexts) {
    const ids = tokenizer.encode(context);
    const vocab = m.config.vocabSize;
    const logits = backend.download(m.forward(Int32Array.from(ids), m.newCache(1, ids.length))) as Float32Array;
    const last = logits.subarray((ids.length - 1) * vocab, ids.length * vocab);
    let arg = 0;
    last.forEach((v, i) => { if (v > last[arg]!) arg = i; });
    const text = tokenizer.decode([arg]);
    const word = text.trim();
    if (text.startsWith(' ') && word && !/\s/.test(word) && tokenizer.encode(` ${word}`).join() === String(arg)) { made = { context, word }; break; }
  }
  assert.ok(made, 'no context gave a usable greedy word');
  const dir = mkdtempSync(join(tmpdir(), 'mpt-icl-'));
  writeFileSync(join(dir, 'lm.jsonl'), [
    JSON.stringify({ context: made.context, continuation: made.word }),
    JSON.stringify({ context: made.context, continuation: `${made.word}zzq` }),
  ].join('\n'));
  writeFileSync(join(dir, 'tasks.yaml'), 'icl_tasks:\n- {label: greedy, dataset_uri: lm.jsonl, num_fewshot: [0], icl_task_type: language_modeling}\n');
  const [r] = evaluateIclTasks(m, tokenizer, loadIclTasks(join(dir, 'tasks.yaml')));
  assert.deepEqual(r!.picks, [0, -1]);
  assert.equal(r!.accuracy, 0.5);
});

test('bad input: unknown task type, missing dataset, malformed JSONL lines named by file and line', () => {
  assert.throws(() => loadIclTasks(join(data, 'unknown-type.yaml')), (e: Error) => e instanceof ConfigError && /task "odd": icl_task_type "translation" is unknown/.test(e.message));
  assert.throws(() => loadIclTasks(join(data, 'missing-dataset.yaml')), (e: Error) => e instanceof UserError && /task "gone": dataset file "not-here.jsonl" does not exist/.test(e.message));
  assert.throws(() => loadIclTasks(join(data, 'no-such-tasks.yaml')), /no-such-tasks\.yaml: no such file/);
  assert.throws(() => readIclDataset(join(data, 'bad-gold.jsonl'), 'multiple_choice', false), (e: Error) => e instanceof FormatError && /bad-gold\.jsonl:2: "gold" must be an index in \[0, 2\), got 2/.test(e.message));
  assert.throws(() => readIclDataset(join(data, 'missing-choices.jsonl'), 'multiple_choice', false), /missing-choices\.jsonl:3: missing "choices"/);
  assert.throws(() => readIclDataset(join(data, 'bad-line.jsonl'), 'language_modeling', false), /bad-line\.jsonl:1: missing "context"/);
  assert.throws(() => readIclDataset(join(data, 'mc.jsonl'), 'multiple_choice', true), /mc\.jsonl:1: missing "category"/);
  const dir = mkdtempSync(join(tmpdir(), 'mpt-icl-'));
  writeFileSync(join(dir, 't.yaml'), 'icl_tasks:\n- {label: x, dataset_uri: a.jsonl, num_fewshot: "five", icl_task_type: schema}\n');
  writeFileSync(join(dir, 'a.jsonl'), '{}\n');
  assert.throws(() => loadIclTasks(join(dir, 't.yaml')), /task "x": "num_fewshot" must be a list of integers/);
});

test('CLI: mpt eval icl --json and mpt eval perplexity --json; a bad tasks file exits 1 with one line', () => {
  const mpt = join(projectRoot, 'bin', 'mpt.js');
  const icl = spawnSync(process.execPath, [mpt, 'eval', 'icl', '--model', tiny, '--device', 'cpu', '--tasks', join(data, 'tasks.yaml'), '--json'], { encoding: 'utf8' });
  assert.equal(icl.status, 0, icl.stderr);
  const parsed = JSON.parse(icl.stdout);
  assert.equal(parsed.results.length, 8);
  assert.deepEqual(Object.keys(parsed.results[0]), ['name', 'label', 'num_fewshot', 'category', 'icl_task_type', 'accuracy', 'correct', 'total']);
  const ppl = spawnSync(process.execPath, [mpt, 'eval', 'perplexity', '--model', tiny, '--device', 'cpu', '--data', join(data, 'docs.jsonl'), '--seq-len', '32', '--json'], { encoding: 'utf8' });
  assert.equal(ppl.status, 0, ppl.stderr);
  const p = JSON.parse(ppl.stdout);
  assert.ok(p.mean_loss > 0 && Math.abs(p.perplexity - Math.exp(p.mean_loss)) < 1e-6 * p.perplexity);
  const bad = spawnSync(process.execPath, [mpt, 'eval', 'icl', '--model', tiny, '--device', 'cpu', '--tasks', join(data, 'unknown-type.yaml')], { encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^mpt: error: .*icl_task_type "translation" is unknown/);
});
