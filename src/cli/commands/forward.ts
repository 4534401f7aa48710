import type { Command } from '../main.js';
import { DEVICE_FLAGS, MODEL_FLAG, openOptions } from '../model-flags.js';
import { openForInference } from '../../generate/open.js';
import { topLogits } from '../../generate/sampling.js';
import { UserError } from '../../util/errors.js';

export const forwardCommand: Command = {
  spec: {
    name: 'forward',
    summary: 'Next-token logits at every position of a sequence of ids (for checking against other code)',
    usage: 'mpt forward --model M --ids 1,2,3 [--top-k 5] [--json]',
    flags: {
      ...MODEL_FLAG,
      ids: { type: 'ids', placeholder: '1,2,3', description: 'The input token ids (required).' },
      'top-k': { type: 'integer', default: 5, description: 'How many of the best next tokens to print per position.' },
      json: { type: 'boolean', description: 'Print {"positions": [[[id, logit], …], …]} (best first, one list per position).' },
      ...DEVICE_FLAGS,
    },
  },
  async run(args) {
    const ids = args.flags.ids as number[] | undefined;
    if (!ids) throw new UserError('mpt forward: --ids is required, e.g. --ids 510,3158,8516');
    const k = args.flags['top-k'] as number;
    if (k < 1) throw new UserError(`--top-k must be ≥ 1, got ${k}`);
    const { model } = await openForInference(openOptions(args));
    const { vocabSize, maxSeqLen, alibi } = model.config;
    const bad = ids.find((id) => id >= vocabSize);
    if (bad !== undefined) throw new UserError(`token id ${bad} is out of range: the vocabulary has ${vocabSize} entries (0…${vocabSize - 1})`);
    if (ids.length > maxSeqLen && !alibi) throw new UserError(`${ids.length} ids exceed the model's max_seq_len of ${maxSeqLen}`);
    const logits = model.backend.download(model.forward(Int32Array.from(ids), model.newCache(1, ids.length))) as Float32Array;
    const positions = ids.map((_, p) => topLogits(logits.subarray(p * vocabSize, (p + 1) * vocabSize), k));
    if (args.flags.json) {
      process.stdout.write(JSON.stringify({ positions }) + '\n');
      return;
    }
    positions.forEach((best, p) => process.stdout.write(`${p}\t${ids[p]}\t${best.map(([id, l]) => `${id}:${l.toFixed(4)}`).join(' ')}\n`));
  },
};
