import type { Command } from '../main.js';
import { UserError } from '../../util/errors.js';
import { mergeParts } from '../../data/index.js';

export const dataMergeCommand: Command = {
  spec: {
    name: 'data merge',
    positionals: true,
    summary: 'Check and join the parts of a sharded `data prepare` into manifest.json',
    usage: 'mpt data merge DATASET_DIR [--json]',
    flags: { json: { type: 'boolean', description: 'Print the merged manifest as one JSON document.' } },
  },
  async run(args) {
    const [dir, ...extra] = args.positionals;
    if (!dir || extra.length > 0) throw new UserError('mpt data merge: expected DATASET_DIR (see --help)');
    const m = await mergeParts(dir);
    if (args.flags.json) {
      process.stdout.write(JSON.stringify(m, null, 2) + '\n');
      return;
    }
    const lines = Object.entries(m.sources).map(([name, s]) =>
      `  ${name.padEnd(14)} ${String(s.train.samples).padStart(9)} train ${String(s.val.samples).padStart(7)} val samples, ${s.train.shards.length + s.val.shards.length} shards`);
    process.stdout.write([`merged ${m.parts} parts into ${dir}/manifest.json (seq len ${m.seqLen})`, ...lines].join('\n') + '\n');
  },
};
