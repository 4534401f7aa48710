import type { Command } from '../main.js';
import { UserError } from '../../util/errors.js';

export const benchTrainCommand: Command = {
  spec: {
    name: 'bench train',
    summary: 'Training-step speed on CUDA: tokens/s, MFU, peak memory, a per-kernel breakdown, PyTorch baselines',
    usage: 'mpt bench train --device cuda --preset mpt-1b-redpajama-200b --microbatch N [--torch bench/torch_baseline.py]',
    flags: {
      device: { type: 'string', placeholder: 'D', default: 'cuda', description: 'Only cuda: the CPU trains too slowly to bench a 1.3B model.' },
      preset: { type: 'string', placeholder: 'NAME', default: 'mpt-1b-redpajama-200b', description: 'Random weights with this model\'s exact configuration.' },
      microbatch: { type: 'integer', default: 8, description: 'Sequences a step.' },
      'seq-len': { type: 'integer', default: 2048, description: 'Tokens a sequence.' },
      warmup: { type: 'integer', default: 10, description: 'Untimed steps first, for mpt-ts and (plus the one that compiles) PyTorch alike; more while GEMM algorithms are still being chosen.' },
      steps: { type: 'integer', default: 12, description: 'Timed steps (the median is reported; PyTorch\'s compiled steps spike every 3–4 steps, so not fewer than ~12).' },
      torch: { type: 'string', placeholder: 'SCRIPT', description: 'Also run bench/torch_baseline.py --train (eager SDPA, and torch.compile + FlexAttention) in the same command.' },
      json: { type: 'boolean', description: 'Print the result as one JSON document.' },
    },
    details: `One step is the path mpt train runs: forward, fused output layer and cross entropy, backward, gradient
clipping and AdamW on float32 masters with bf16 compute copies. MFU counts llm-foundry's FLOPs,
3·(2·n_params·T + n_layers·4·d_model·T²) a sequence, over 989 TFLOP/s.
Both systems get the same warm-up: on an H200 at its power cap both drift over their first ~10 steps
(torch.compile's from ~273 to ~285 ms, mpt-ts's down to its steady pace), and a training run lives in
the steady state, so the default warm-up is 10 steps (bench/RESULTS-cuda-train.md).
Record figures in bench/RESULTS-cuda-train.md with the card, date, commit and the baselines of the same run.`,
  },
  async run(args) {
    const f = args.flags;
    if (f.device !== 'cuda') throw new UserError('mpt bench train runs on CUDA only: pass --device cuda');
    const { runTrainBench, formatTrainBench } = await import('../../bench/cuda-train-bench.js');
    const result = runTrainBench({
      preset: f.preset as string, microbatch: f.microbatch as number, seqLen: f['seq-len'] as number,
      warmup: f.warmup as number, steps: f.steps as number, torch: (f.torch as string | undefined) ?? null,
    });
    process.stdout.write(f.json ? JSON.stringify(result) + '\n' : formatTrainBench(result) + '\n');
  },
};
