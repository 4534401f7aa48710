import type { Command } from '../main.js';
import { DEVICE_FLAGS, MODEL_FLAG, openOptions } from '../model-flags.js';
import { openForInference } from '../../generate/open.js';
import { evaluatePerplexity, readEvalTokens } from '../../eval/index.js';
import { Progress } from '../../util/progress.js';
import { UserError } from '../../util/errors.js';

export const evalPerplexityCommand: Command = {
  spec: {
    name: 'eval perplexity',
    summary: 'Mean loss, perplexity and bits per byte of a model over text, JSONL or token shards',
    usage: 'mpt eval perplexity --model M --data FILE|FOLDER [--seq-len N] [--stride N] [--json]',
    flags: {
      ...MODEL_FLAG,
      data: { type: 'string', placeholder: 'PATH', description: 'A .txt, .jsonl/.json ("text" field; .gz/.zst too) or .bin token shard, or a folder of them (required).' },
      'seq-len': { type: 'integer', placeholder: 'N', description: "Window length in tokens (default: the model's max_seq_len)." },
      stride: { type: 'integer', placeholder: 'N', description: 'Sliding windows: advance N tokens and score only the new ones (default: the window length, no overlap).' },
      'drop-last': { type: 'boolean', description: "Leave out a last window shorter than --seq-len (as the trainer's packing does)." },
      'batch-size': { type: 'integer', placeholder: 'N', description: 'Windows per forward pass (default: as many as fit 2048 tokens).' },
      'on-bad-line': { type: 'string', placeholder: 'P', default: 'fail', description: 'A malformed JSONL line: fail, or skip it.' },
      json: { type: 'boolean', description: 'Print the result as one JSON object.' },
      ...DEVICE_FLAGS,
    },
    details: `Documents are joined as the trainer's packing joins them (each one's tokens, then EOS) and cut
into windows; every token but a window's first is predicted from the ones before it. The mean loss
is the trainer's eval loss over the same windows. Bits per byte = total loss in bits / UTF-8 bytes
of the text (not reported for token shards).

Examples:
  mpt eval perplexity --model ./mpt-1b --data wiki.test.txt
  mpt eval perplexity --model ./mpt-1b --data val/ --stride 512 --json`,
  },
  async run(args) {
    const f = args.flags;
    const data = f.data as string | undefined;
    if (!data) throw new UserError('mpt eval perplexity: --data is required (a text/JSONL file, a token shard or a folder)');
    const onBadLine = f['on-bad-line'] as string;
    if (onBadLine !== 'fail' && onBadLine !== 'skip') throw new UserError(`--on-bad-line must be fail or skip, got "${onBadLine}"`);
    const batchSize = f['batch-size'] as number | undefined;
    if (batchSize !== undefined && batchSize < 1) throw new UserError(`--batch-size must be ≥ 1, got ${batchSize}`);
    const { model, tokenizer } = await openForInference(openOptions(args));
    const { maxSeqLen } = model.config;
    const windowLength = (f['seq-len'] as number | undefined) ?? maxSeqLen;
    if (windowLength < 2 || windowLength > maxSeqLen) throw new UserError(`--seq-len must be in [2, ${maxSeqLen}] (the model's max_seq_len), got ${windowLength}`);
    const stride = (f.stride as number | undefined) ?? windowLength;
    if (stride < 1 || stride > windowLength) throw new UserError(`--stride must be in [1, ${windowLength}] (the window length), got ${stride}`);

    const quiet = !process.stderr.isTTY && Boolean(f.json);
    const input = await readEvalTokens(data, tokenizer, {
      onBadLine,
      onFile: (file, i, n) => { if (n > 1 && process.stderr.isTTY) process.stderr.write(`\rmpt: reading ${i + 1}/${n} ${file}\x1b[K`); },
    });
    if (input.files.length > 1 && process.stderr.isTTY) process.stderr.write('\n');
    if (input.tokens.length < 2) throw new UserError(`--data ${data}: too little text to score (${input.tokens.length} tokens)`);
    let progress: Progress | undefined;
    const result = evaluatePerplexity(model, input.tokens, {
      windowLength, stride, dropLast: Boolean(f['drop-last']), bytes: input.bytes, batchSize,
      onProgress: (done, total) => {
        progress ??= new Progress({ label: 'perplexity', total, unit: 'windows', quiet });
        progress.set(done);
      },
    });
    progress?.finish();
    if (result.windows === 0) throw new UserError(`--data ${data}: no complete window of ${windowLength} tokens to score (${input.tokens.length} tokens; drop --drop-last?)`);
    if (f.json) {
      process.stdout.write(JSON.stringify({
        tokens: result.tokens, input_tokens: result.inputTokens, documents: input.documents, files: input.files.length,
        windows: result.windows, seq_len: result.windowLength, stride: result.stride,
        mean_loss: result.meanLoss, perplexity: result.perplexity, bytes: result.bytes, bits_per_byte: result.bitsPerByte,
      }) + '\n');
      return;
    }
    const lines = [
      `tokens scored   ${result.tokens} (of ${result.inputTokens}; ${input.documents} documents, ${result.windows} windows of ${result.windowLength}, stride ${result.stride})`,
      `mean loss       ${result.meanLoss.toFixed(6)} nats/token`,
      `perplexity      ${result.perplexity.toFixed(4)}`,
      `bits per byte   ${result.bitsPerByte === null ? 'n/a (token shards have no text)' : result.bitsPerByte.toFixed(6)}`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  },
};
