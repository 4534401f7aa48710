import type { Command } from '../main.js';
import { trainFromYaml } from '../../train/from-yaml.js';
import { UserError } from '../../util/errors.js';

export const trainCommand: Command = {
  spec: {
    name: 'train',
    summary: 'Train or fine-tune a model from an llm-foundry style YAML',
    usage: 'mpt train CONFIG.yaml [key=value …]',
    details: `
Reads llm-foundry's keys: model (architecture keys of either format, or pretrained: FOLDER|HUB_NAME),
tokenizer, train_loader, eval_loader, optimizer (decoupled_adamw | adamw), scheduler
(cosine_with_warmup | linear_decay_with_warmup | constant_with_warmup), algorithms.gradient_clipping,
max_duration, eval_interval, global_train_batch_size, device_train_microbatch_size, precision
(fp32 | amp_bf16), seed, save_folder, save_interval, save_num_checkpoints_to_keep, load_path,
autoresume. Durations take Composer units: 100ba, 2000000tok, 64sp, 1ep, 0.5dur.
Overrides are dotted keys: mpt train yamls/tiny-cpu.yaml max_duration=20ba optimizer.lr=1e-3
Metrics go to SAVE_FOLDER/metrics.jsonl with a loss plot beside it (loss.svg).`,
    flags: {},
  },
  async run(args) {
    const [file, ...overrides] = args.positionals;
    if (!file) throw new UserError('mpt train: give the training YAML, e.g. mpt train yamls/tiny-cpu.yaml');
    await trainFromYaml(file, overrides);
  },
};
