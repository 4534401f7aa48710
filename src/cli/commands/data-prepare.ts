import type { Command } from '../main.js';
import { UserError } from '../../util/errors.js';
import { prepareDataset, parseShardSpec, type BadLinePolicy } from '../../data/index.js';

export const dataPrepareCommand: Command = {
  spec: {
    name: 'data prepare',
    positionals: true,
    summary: 'Tokenize a RedPajama-layout corpus into packed token shards',
    usage: 'mpt data prepare INPUT_DIR OUT_DIR --tokenizer PATH [--seq-len 2048] [--shard i/N] [options]',
    flags: {
      tokenizer: { type: 'string', placeholder: 'PATH', description: 'tokenizer.json, a model folder holding one, or a hub name such as EleutherAI/gpt-neox-20b (required).' },
      'seq-len': { type: 'integer', default: 2048, description: 'Tokens per packed sample.' },
      'val-fraction': { type: 'number', default: 0.005, description: 'Share of documents held out for validation (chosen by a hash of their text).' },
      shard: { type: 'string', placeholder: 'i/N', description: 'Prepare only part i of N (0-based) of the input files; run `mpt data merge` when all are done.' },
      threads: { type: 'integer', description: 'Tokenizer worker threads (default: all cores).' },
      'on-bad-line': { type: 'string', default: 'fail', placeholder: 'fail|skip', description: 'A malformed JSONL line stops the run, or is reported and skipped.' },
      sources: { type: 'string', placeholder: 'A,B', description: 'Only these source folders (default: every folder of INPUT_DIR).' },
      force: { type: 'boolean', description: "Redo this part even if its manifest exists." },
      json: { type: 'boolean', description: 'Print the part manifest as one JSON document.' },
      quiet: { type: 'boolean', description: 'No progress bar.' },
    },
    details: `
INPUT_DIR holds one folder per source (common_crawl, c4, github, wikipedia, book, arxiv,
stackexchange, or any names), each with .jsonl, .jsonl.gz or .jsonl.zst files whose lines are
objects with a "text" field, or .txt files (one document each). Every document is followed by EOS;
each source's stream is cut into samples of exactly --seq-len tokens (llm-foundry concat-tokens).

Many machines (a SLURM array, a Kubernetes indexed job) can share one OUT_DIR:
  mpt data prepare in/ out/ --tokenizer tok.json --shard $SLURM_ARRAY_TASK_ID/64
  mpt data merge out/`,
  },
  async run(args) {
    const [input, output, ...extra] = args.positionals;
    if (!input || !output || extra.length > 0) throw new UserError('mpt data prepare: expected INPUT_DIR and OUT_DIR (see --help)');
    const tokenizer = args.flags.tokenizer as string | undefined;
    if (!tokenizer) throw new UserError('mpt data prepare: --tokenizer is required (a tokenizer.json or a model folder)');
    const policy = args.flags['on-bad-line'] as string;
    if (policy !== 'fail' && policy !== 'skip') throw new UserError(`--on-bad-line must be fail or skip, got "${policy}"`);
    const sources = (args.flags.sources as string | undefined)?.split(',').map((s) => s.trim()).filter(Boolean);
    let badLines = 0;
    const result = await prepareDataset({
      input, output, tokenizer,
      seqLen: args.flags['seq-len'] as number,
      valFraction: args.flags['val-fraction'] as number,
      shard: args.flags.shard ? parseShardSpec(args.flags.shard as string) : undefined,
      threads: args.flags.threads as number | undefined,
      onBadLine: policy as BadLinePolicy,
      sources,
      force: Boolean(args.flags.force),
      quietProgress: Boolean(args.flags.quiet),
      onNotice: (m) => {
        // Report every bad line up to a point, then only count them, so a bad dump cannot flood the log.
        if (/\(skipped\)$/.test(m) && ++badLines > 50) return;
        process.stderr.write(`mpt: warning: ${m}\n`);
      },
    });
    if (badLines > 50) process.stderr.write(`mpt: warning: ${badLines} malformed lines skipped in all (first 50 shown)\n`);
    if (args.flags.json) {
      process.stdout.write(JSON.stringify({ ...result.part, seconds: result.seconds, bytes_read: result.bytesRead, text_chars: result.textChars, tokens: result.tokens }, null, 2) + '\n');
      return;
    }
    const p = result.part;
    const rows = Object.entries(p.sources).map(([name, s]) =>
      `  ${name.padEnd(14)} ${String(s.train.documents + s.val.documents).padStart(9)} docs ${String(s.train.samples).padStart(8)} train ${String(s.val.samples).padStart(6)} val samples${s.badLines ? `  ${s.badLines} bad lines skipped` : ''}`);
    process.stdout.write([
      `part ${p.part.index}/${p.part.count}: ${p.inputs.length} files (${(result.bytesRead / 1e6).toFixed(1)} MB on disk), ${(result.textChars / 1e6).toFixed(1)} M characters → ${result.tokens} tokens in ${result.seconds.toFixed(1)} s` +
        ` (${(result.textChars / 1e6 / result.seconds).toFixed(2)} M chars/s, ${(result.tokens / result.seconds / 1e3).toFixed(0)}k tokens/s, tokenizer loading included)`,
      ...rows,
      result.manifest ? `wrote ${output}/manifest.json (seq len ${p.seqLen})` : `wrote ${output}/parts/; run 'mpt data merge ${output}' when all ${p.part.count} parts are done`,
    ].join('\n') + '\n');
  },
};
