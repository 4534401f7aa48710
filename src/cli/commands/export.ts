import type { Command } from '../main.js';
import { exportCheckpoint } from '../../train/export.js';
import { UserError } from '../../util/errors.js';

export const exportCommand: Command = {
  spec: {
    name: 'export',
    positionals: true,
    summary: 'Write a training checkpoint as a Hugging Face model folder',
    usage: 'mpt export CHECKPOINT OUT_DIR [--dtype float32|bfloat16] [--tokenizer-name NAME]',
    details: `CHECKPOINT is a checkpoint folder (ba<step>) or a save folder (its newest complete checkpoint).
OUT_DIR gets config.json (MosaicGPT format), model.safetensors and the run's tokenizer files: copied
from the tokenizer folder the YAML named, or for a hub name (EleutherAI/gpt-neox-20b in the seed YAML)
from the Hugging Face cache, downloaded there when missing. Offline and not cached, the model is still
written and a note says so; config.json's tokenizer_name lets a loader fetch the tokenizer later.`,
    flags: {
      dtype: { type: 'string', placeholder: 'T', default: 'float32', description: 'Weights on disk: float32 (as trained) or bfloat16 (half the size, rounded to nearest even).' },
      'tokenizer-name': { type: 'string', placeholder: 'NAME', description: "config.json's tokenizer_name, e.g. EleutherAI/gpt-neox-20b (default: the run's tokenizer)." },
    },
  },
  async run(args) {
    const [checkpoint, out] = args.positionals;
    if (!checkpoint || !out || args.positionals.length > 2) throw new UserError('mpt export: expected CHECKPOINT OUT_DIR');
    const dtype = args.flags.dtype as string;
    if (dtype !== 'float32' && dtype !== 'bfloat16') throw new UserError(`--dtype must be float32 or bfloat16, got "${dtype}"`);
    const r = await exportCheckpoint(checkpoint, out, { dtype, tokenizerName: args.flags['tokenizer-name'] as string | undefined });
    for (const n of r.notes) process.stderr.write(`note: ${n}\n`);
    process.stdout.write(`wrote ${r.dir} (${r.format === 'mosaic_gpt' ? 'MosaicGPT' : 'MPT'} format)\n`);
  },
};
