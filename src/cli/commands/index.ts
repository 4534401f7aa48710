import type { Command } from '../main.js';
import { generateCommand } from './generate.js';
import { serveCommand } from './serve.js';
import { forwardCommand } from './forward.js';
import { detokenizeCommand, tokenizeCommand } from './tokenize.js';
import { infoCommand } from './info.js';
import { benchCommand, benchTokenizeCommand } from './bench.js';
import { trainCommand } from './train.js';
import { exportCommand } from './export.js';
import { evalPerplexityCommand } from './eval-perplexity.js';
import { evalIclCommand } from './eval-icl.js';
import { dataPrepareCommand } from './data-prepare.js';
import { dataMergeCommand } from './data-merge.js';
import { dataDemoCommand } from './data-demo.js';
import { benchTrainCommand } from './bench-train.js';

/** Every command of the CLI, in the order `mpt --help` lists them. One file per command. */
export const commands: Command[] = [
  generateCommand,
  serveCommand,
  forwardCommand,
  tokenizeCommand,
  detokenizeCommand,
  infoCommand,
  benchCommand,
  benchTokenizeCommand,
  benchTrainCommand,
  trainCommand,
  exportCommand,
  evalPerplexityCommand,
  evalIclCommand,
  dataDemoCommand,
  dataPrepareCommand,
  dataMergeCommand,
];
