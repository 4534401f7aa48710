import type { Command } from '../main.js';
import { MODEL_FLAG } from '../model-flags.js';
import { openFolder } from '../../generate/open.js';
import { parameterCount } from '../../model/config.js';

export const infoCommand: Command = {
  spec: {
    name: 'info',
    summary: 'Format, weight dtype, parameter count and configuration of a model',
    usage: 'mpt info --model M [--json]',
    flags: {
      ...MODEL_FLAG,
      json: { type: 'boolean', description: 'Print one JSON document.' },
    },
  },
  async run(args) {
    const folder = await openFolder(args.flags.model as string | undefined);
    try {
      const files = [...new Set([...folder.tensors.values()].map((t) => t.file))];
      const info = {
        folder: folder.dir,
        format: folder.format,
        weights_dtype: folder.weightsDtype,
        weight_files: files,
        parameters: parameterCount(folder.config),
        config: folder.config,
      };
      if (args.flags.json) {
        process.stdout.write(JSON.stringify(info, null, 2) + '\n');
        return;
      }
      const c = folder.config;
      const lines = [
        `folder       ${info.folder}`,
        `format       ${info.format === 'mosaic_gpt' ? 'MosaicGPT (mosaic_gpt)' : 'MPT (mpt)'}`,
        `weights      ${info.weights_dtype} in ${files.length} file(s)`,
        `parameters   ${info.parameters.toLocaleString('en-US')}`,
        `shape        ${c.nLayers} layers × d_model ${c.dModel}, ${c.nHeads} heads, MLP ×${c.expansionRatio}, vocab ${c.vocabSize}, max_seq_len ${c.maxSeqLen}`,
        `positions    ${c.alibi ? `ALiBi (bias max ${c.alibiBiasMax})` : c.learnedPosEmb ? 'learned embeddings' : 'none'}`,
        `attention    ${c.qkLn ? 'QK LayerNorm' : 'no QK LayerNorm'}${c.clipQkv !== null ? `, clip_qkv ${c.clipQkv}` : ''}${c.softmaxScale !== null ? `, softmax_scale ${c.softmaxScale}` : ''}`,
        `biases       ${c.noBias ? 'none' : 'yes'}${c.logitScale !== null ? `; logit_scale ${c.logitScale}` : ''}`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
    } finally {
      await folder.close();
    }
  },
};
