import type { Command } from '../main.js';
import { MODEL_FLAG, readStdin } from '../model-flags.js';
import { parseIds } from '../args.js';
import { openTokenizer } from '../../generate/open.js';
import { UserError } from '../../util/errors.js';

export const tokenizeCommand: Command = {
  spec: {
    name: 'tokenize',
    positionals: true,
    summary: 'Text to token ids with the model\'s tokenizer (reads stdin when no text is given)',
    usage: 'mpt tokenize --model M [--json] ["text"]',
    flags: {
      ...MODEL_FLAG,
      json: { type: 'boolean', description: 'Print {"ids": […]} instead of comma-separated ids.' },
    },
  },
  async run(args) {
    const tokenizer = await openTokenizer(args.flags.model as string | undefined);
    const text = args.positionals.length > 0 ? args.positionals.join(' ') : await readStdin();
    const ids = tokenizer.encode(text);
    process.stdout.write((args.flags.json ? JSON.stringify({ ids }) : ids.join(',')) + '\n');
  },
};

export const detokenizeCommand: Command = {
  spec: {
    name: 'detokenize',
    positionals: true,
    summary: 'Token ids back to text',
    usage: 'mpt detokenize --model M 1,2,3',
    flags: {
      ...MODEL_FLAG,
      json: { type: 'boolean', description: 'Print {"text": "…"}.' },
    },
  },
  async run(args) {
    if (args.positionals.length === 0) throw new UserError('mpt detokenize: give the ids, e.g. mpt detokenize --model M 510,3158');
    const ids = parseIds(args.positionals.join(','), 'ids');
    const tokenizer = await openTokenizer(args.flags.model as string | undefined);
    const text = tokenizer.decode(ids);
    process.stdout.write(args.flags.json ? JSON.stringify({ text }) + '\n' : text + '\n');
  },
};
