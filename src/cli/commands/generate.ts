import type { Command } from '../main.js';
import { DEVICE_FLAGS, MODEL_FLAG, openOptions, readStdin } from '../model-flags.js';
import { openForInference } from '../../generate/open.js';
import { generate } from '../../generate/generate.js';
import { UserError } from '../../util/errors.js';

export const generateCommand: Command = {
  spec: {
    name: 'generate',
    positionals: true,
    summary: 'Continue a prompt (streams the text as it is produced)',
    usage: 'mpt generate [options] "prompt" ["another prompt" …]',
    flags: {
      ...MODEL_FLAG,
      'max-new-tokens': { type: 'integer', short: 'n', default: 64, description: 'Most tokens to generate per prompt.' },
      temperature: { type: 'number', short: 't', default: 0.8, description: 'Sampling temperature; 0 is greedy (always the most likely token).' },
      'top-k': { type: 'integer', default: 0, description: 'Sample only among the k most likely tokens (0: off).' },
      'top-p': { type: 'number', default: 0.95, description: 'Sample from the smallest set of tokens whose probability reaches p (1: off).' },
      'repetition-penalty': { type: 'number', default: 1, description: 'Above 1 discourages tokens already seen (1: off).' },
      seed: { type: 'integer', description: 'Random seed: the same seed gives the same text (default: random).' },
      stop: { type: 'strings', placeholder: 'TEXT', description: 'Stop when the output contains TEXT (repeatable).' },
      'prompt-ids': { type: 'ids', placeholder: '1,2,3', description: 'Give the prompt as token ids instead of text.' },
      'allow-long': { type: 'boolean', description: 'ALiBi models only: allow prompt + output past max_seq_len.' },
      json: { type: 'boolean', description: 'Print {"ids": […], "text": "…"} (an array of them for several prompts) instead of streaming.' },
      ...DEVICE_FLAGS,
    },
    details: `Examples:
  mpt generate --model ./mpt-1b "The history of"
  mpt generate --model mosaicml/mpt-1b-redpajama-200b --temperature 0 -n 32 "def fib(n):"
  echo "Once upon a time" | mpt generate --model ./mpt-1b --seed 7`,
  },
  async run(args) {
    const f = args.flags;
    const temperature = f.temperature as number, topP = f['top-p'] as number, topK = f['top-k'] as number;
    const maxNewTokens = f['max-new-tokens'] as number, penalty = f['repetition-penalty'] as number;
    if (temperature < 0) throw new UserError(`--temperature must be ≥ 0, got ${temperature}`);
    if (!(topP > 0 && topP <= 1)) throw new UserError(`--top-p must be in (0, 1], got ${topP}`);
    if (topK < 0) throw new UserError(`--top-k must be ≥ 0, got ${topK}`);
    if (maxNewTokens < 0) throw new UserError(`--max-new-tokens must be ≥ 0, got ${maxNewTokens}`);
    if (!(penalty > 0)) throw new UserError(`--repetition-penalty must be > 0, got ${penalty}`);
    const { model, tokenizer } = await openForInference(openOptions(args));
    const vocab = model.config.vocabSize;
    let prompts: number[][];
    if (f['prompt-ids']) {
      if (args.positionals.length > 0) throw new UserError('give the prompt as text or with --prompt-ids, not both');
      prompts = [f['prompt-ids'] as number[]];
    } else {
      const texts = args.positionals.length > 0 ? args.positionals : [await readStdin()];
      prompts = texts.map((t) => tokenizer.encode(t));
    }
    for (const p of prompts) {
      const bad = p.find((id) => id >= vocab);
      if (bad !== undefined) throw new UserError(`token id ${bad} is out of range: the vocabulary has ${vocab} entries (0…${vocab - 1})`);
    }
    const streaming = !f.json && prompts.length === 1;
    const results = await generate(model, tokenizer, prompts, {
      maxNewTokens, temperature, topK, topP, repetitionPenalty: penalty,
      seed: f.seed as number | undefined, stop: (f.stop as string[] | undefined) ?? [],
      eosId: tokenizer.eosId, allowBeyondMaxSeqLen: Boolean(f['allow-long']),
      onText: streaming ? (_, text) => process.stdout.write(text) : undefined,
      onWarning: (message) => process.stderr.write(`mpt: warning: ${message}\n`),
    });
    if (f.json) {
      const docs = results.map((r) => ({ ids: r.ids, text: r.text, finish_reason: r.finishReason }));
      process.stdout.write(JSON.stringify(docs.length === 1 ? docs[0] : docs) + '\n');
    } else if (streaming) {
      process.stdout.write('\n');
    } else {
      results.forEach((r, i) => process.stdout.write(`--- ${i + 1} ---\n${r.text}\n`));
    }
  },
};
