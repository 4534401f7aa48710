import type { Command } from '../main.js';
import { exportCheckpoint } from '../../train/export.js';
import { UserError } from '../../util/errors.js';

export const exportCommand: Command = {
  spec: {
    name: 'export',
    summary: 'Write a training checkpoint as a Hugging Face model folder',
    usage: 'mpt export CHECKPOINT OUT_DIR',
    details: `CHECKPOINT is a checkpoint folder (ba<step>) or a save folder (its newest complete checkpoint).
OUT_DIR gets config.json (MosaicGPT format), model.safetensors and the run's tokenizer files.`,
    flags: {},
  },
  async run(args) {
    const [checkpoint, out] = args.positionals;
    if (!checkpoint || !out || args.positionals.length > 2) throw new UserError('mpt export: expected CHECKPOINT OUT_DIR');
    const r = await exportCheckpoint(checkpoint, out);
    for (const n of r.notes) process.stderr.write(`note: ${n}\n`);
    process.stdout.write(`wrote ${r.dir} (${r.format === 'mosaic_gpt' ? 'MosaicGPT' : 'MPT'} format)\n`);
  },
};
