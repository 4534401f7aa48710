import type { Command } from '../main.js';
import { trainFromYaml } from '../../train/from-yaml.js';
import { readTrainConfig } from '../../train/config.js';
import { selectBackend, type DeviceChoice } from '../../backend/select.js';
import type { CudaBackend } from '../../backend/cuda/index.js';
import { peakBf16Flops } from '../../backend/cuda/peak-flops.js';
import { UserError } from '../../util/errors.js';

export const trainCommand: Command = {
  spec: {
    name: 'train',
    positionals: true,
    summary: 'Train or fine-tune a model from an llm-foundry style YAML',
    usage: 'mpt train CONFIG.yaml [key=value …] [--device cpu|cuda|auto]',
    details: `
Reads llm-foundry's keys: model (architecture keys of either format, or pretrained: FOLDER|HUB_NAME),
tokenizer, train_loader, eval_loader, optimizer (decoupled_adamw | adamw), scheduler
(cosine_with_warmup | linear_decay_with_warmup | constant_with_warmup), algorithms.gradient_clipping,
max_duration, eval_interval, global_train_batch_size, device_train_microbatch_size, precision
(fp32 | amp_bf16), seed, save_folder, save_interval, save_num_checkpoints_to_keep, load_path,
autoresume. Durations take Composer units: 100ba, 2000000tok, 64sp, 1ep, 0.5dur.
eval_loader (name: text with dataset.local + split: val, or name: bytes with dataset.paths) sets what
every evaluation scores; without it, the training data's own held-out split is scored.
Overrides are dotted keys: mpt train yamls/tiny-cpu.yaml max_duration=20ba optimizer.lr=1e-3
Paths inside the YAML are relative to its folder; paths given as overrides, to the working folder.
Metrics go to SAVE_FOLDER/metrics.jsonl with a loss plot beside it (loss.svg). MFU (llm-foundry's FLOPs per
token) is over the card's dense bf16 peak from NVIDIA's data sheets (H100/H200 SXM 989 TFLOP/s, A100 312, …);
MPT_PEAK_TFLOPS=n sets it for a card not in that list.`,
    flags: {
      device: { type: 'string', placeholder: 'D', default: 'auto', description: 'cpu, cuda (bf16 compute under amp_bf16, float32 under fp32) or auto (CUDA when a GPU is usable).' },
    },
  },
  async run(args) {
    const [file, ...overrides] = args.positionals;
    if (!file) throw new UserError('mpt train: give the training YAML, e.g. mpt train yamls/tiny-cpu.yaml');
    const device = args.flags.device as DeviceChoice;
    const precision = readTrainConfig(file, overrides).settings.precision;
    const { backend, note } = await selectBackend({ device, cudaDType: precision === 'amp_bf16' ? 'bfloat16' : 'float32' });
    if (note) process.stderr.write(`mpt: ${note}\n`);
    // MFU over the card's dense bf16 peak where its data sheet gives one (peak-flops.ts); n/a on the CPU.
    const peakFlops = backend.name === 'cuda' ? peakBf16Flops((backend as CudaBackend).device.name) : null;
    await trainFromYaml(file, overrides, { backend, peakFlops, progress: true });
  },
};
