import { existsSync, statSync } from 'node:fs';
import type { Command } from '../main.js';
import { MODEL_FLAG } from '../model-flags.js';
import { selectBackend, type DeviceChoice } from '../../backend/select.js';
import { MPT_1B_REDPAJAMA_200B, parameterCount } from '../../model/config.js';
import { openForInference, tokenizerFileOf } from '../../generate/open.js';
import { benchInference } from '../../bench/cpu-bench.js';
import { randomBf16Model } from '../../bench/cpu-random-model.js';
import { benchTokenize } from '../../bench/tokenize.js';
import { formatBytes } from '../../util/progress.js';
import { UserError } from '../../util/errors.js';

const PRESETS = { 'mpt-1b-redpajama-200b': MPT_1B_REDPAJAMA_200B };

export const benchCommand: Command = {
  spec: {
    name: 'bench',
    summary: 'Inference speed: prompt and decode tokens/s and peak memory, for a model or a random preset',
    usage: 'mpt bench (--model M | --preset mpt-1b-redpajama-200b) [--device cpu|cuda] [options]',
    flags: {
      ...MODEL_FLAG,
      preset: { type: 'string', placeholder: 'NAME', description: 'Random bfloat16 weights with a known model\'s exact configuration: mpt-1b-redpajama-200b.' },
      device: { type: 'string', placeholder: 'D', default: 'auto', description: 'cpu, cuda, or auto.' },
      'prompt-tokens': { type: 'integer', default: 16, description: 'Prompt length.' },
      'new-tokens': { type: 'integer', description: 'Tokens to decode (default: 32 on the CPU, 128 on CUDA).' },
      batch: { type: 'integer', default: 1, description: 'Rows decoded together (CPU; CUDA measures batch 1 and 16).' },
      threads: { type: 'integer', placeholder: 'N', description: 'CPU threads (default: all cores).' },
      torch: { type: 'string', placeholder: 'SCRIPT', description: 'CUDA: also run this PyTorch baseline (bench/torch_baseline.py) in the same command.' },
      json: { type: 'boolean', description: 'Print the result as one JSON document.' },
    },
    details: `CUDA measures decode at batch 1 and 16 (128 new tokens after a 16-token prompt), the prefill of one
2048-token prompt, peak GPU memory, and a per-kernel breakdown (random weights of the preset).
Record figures in bench/RESULTS.md with the card, date, commit and the baseline from the same run.`,
  },
  async run(args) {
    const f = args.flags;
    const presetName = f.preset as string | undefined;
    if (presetName && f.model) throw new UserError('mpt bench: give --model M or --preset mpt-1b-redpajama-200b, not both');
    const preset = presetName ? PRESETS[presetName as keyof typeof PRESETS] : undefined;
    if (presetName && !preset) throw new UserError(`unknown preset "${presetName}"; known: ${Object.keys(PRESETS).join(', ')}`);
    const device = f.device as DeviceChoice;
    const { backend, note } = await selectBackend({ device, threads: f.threads as number | undefined });
    if (note) process.stderr.write(`mpt: ${note}\n`);

    if (backend.name === 'cuda') {
      if (!presetName) throw new UserError('mpt bench --device cuda runs the random preset: pass --preset mpt-1b-redpajama-200b');
      const { runCudaBench, formatResult } = await import('../../bench/cuda-bench.js');
      const result = runCudaBench({ preset: presetName, torch: (f.torch as string | undefined) ?? null, promptTokens: f['prompt-tokens'] as number, newTokens: (f['new-tokens'] as number | undefined) ?? 128 });
      process.stdout.write(f.json ? JSON.stringify(result) + '\n' : formatResult(result) + '\n');
      return;
    }

    const model = preset
      ? randomBf16Model(preset, backend)
      : (await openForInference({ model: f.model as string | undefined, device: 'cpu', threads: f.threads as number | undefined })).model;
    const result = await benchInference(model, {
      promptTokens: f['prompt-tokens'] as number, newTokens: (f['new-tokens'] as number | undefined) ?? 32, batch: f.batch as number,
    });
    const report = { model: presetName ?? f.model ?? 'the embedded default model (models/mpt-demo)', device: 'cpu', parameters: parameterCount(model.config), ...result };
    if (f.json) {
      process.stdout.write(JSON.stringify(report) + '\n');
      return;
    }
    process.stdout.write([
      `model          ${report.model} (${report.parameters.toLocaleString('en-US')} parameters, CPU)`,
      `prefill        ${result.promptTokens} × ${result.batch} tokens in ${(result.prefillSeconds * 1000).toFixed(1)} ms: ${result.prefillTokensPerSecond.toFixed(1)} tokens/s`,
      `decode         ${result.decodeTokensPerSecond.toFixed(2)} tokens/s (step median ${result.decodeStepMs.median.toFixed(1)} ms, batch ${result.batch})`,
      `peak memory    ${formatBytes(result.peakRssBytes)} resident`,
    ].join('\n') + '\n');
  },
};

export const benchTokenizeCommand: Command = {
  spec: {
    name: 'bench tokenize',
    summary: 'Tokenizer throughput side by side with Hugging Face tokenizers (installed into a scratch folder)',
    usage: 'mpt bench tokenize [--model M | --tokenizer FILE] [--files F …] [--threads N]',
    flags: {
      ...MODEL_FLAG,
      tokenizer: { type: 'string', placeholder: 'FILE', description: 'A tokenizer.json (default: the model folder\'s, or the GPT-NeoX-20B one of the embedded default model).' },
      files: { type: 'strings', placeholder: 'FILE', description: 'Text files to tokenize (repeatable; default: every text file in node_modules, ≥ 20 MB).' },
      'min-bytes': { type: 'integer', default: 20_000_000, description: 'Refuse to measure on less text than this.' },
      threads: { type: 'integer', placeholder: 'N', description: 'Threads for the parallel rows (default: all cores).' },
      rounds: { type: 'integer', default: 3, description: 'Rounds per system; the best is reported.' },
      'hf-dir': { type: 'string', placeholder: 'DIR', description: 'A folder with node_modules/tokenizers already installed.' },
      json: { type: 'boolean', description: 'Print the result as one JSON document.' },
    },
  },
  async run(args) {
    const f = args.flags;
    const tokenizerJson = (f.tokenizer as string | undefined) ?? await tokenizerFileOf(f.model as string | undefined);
    if (!existsSync(tokenizerJson) || !statSync(tokenizerJson).isFile()) throw new UserError(`${tokenizerJson}: no such tokenizer.json`);
    const result = await benchTokenize({
      tokenizerJson, files: f.files as string[] | undefined, minBytes: f['min-bytes'] as number,
      threads: f.threads as number | undefined, rounds: f.rounds as number, hfTokenizersDir: f['hf-dir'] as string | undefined,
      print: !f.json,
    });
    if (f.json) process.stdout.write(JSON.stringify(result) + '\n');
  },
};
