import type { Command } from '../main.js';
import { UserError } from '../../util/errors.js';
import { buildDemoCorpus } from '../../data/index.js';

export const dataDemoCommand: Command = {
  spec: {
    name: 'data demo',
    positionals: true,
    summary: 'Assemble a small real corpus in the RedPajama layout from text on this machine',
    usage: 'mpt data demo OUT_DIR [--mb-per-source 2] [--json]',
    flags: {
      'mb-per-source': { type: 'number', default: 2, description: 'Megabytes of text per source.' },
      json: { type: 'boolean', description: 'Print what was collected as one JSON document.' },
    },
    details: `
Offline, from Debian's /usr/share and installed packages: common_crawl = HTML docs, c4 = READMEs
and NEWS, github = Python's standard library and node_modules, wikipedia = man pages,
book = GNU info manuals, arxiv = technical .txt documents, stackexchange = FAQs.
Then: mpt data prepare OUT_DIR TOKENS_DIR --tokenizer MODEL_DIR`,
  },
  async run(args) {
    const [out, ...extra] = args.positionals;
    if (!out || extra.length > 0) throw new UserError('mpt data demo: expected OUT_DIR (see --help)');
    const result = await buildDemoCorpus({ output: out, bytesPerSource: Math.round((args.flags['mb-per-source'] as number) * 1e6) });
    if (args.flags.json) {
      process.stdout.write(JSON.stringify(result, null, 2) + '\n');
      return;
    }
    const lines = Object.entries(result.sources).map(([name, s]) =>
      `  ${name.padEnd(14)} ${String(s.documents).padStart(6)} docs ${(s.bytes / 1e6).toFixed(2).padStart(6)} MB from ${s.files} files under ${s.roots.join(', ')}`);
    process.stdout.write([`wrote ${out}`, ...lines].join('\n') + '\n');
  },
};
