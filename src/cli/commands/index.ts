import type { Command } from '../main.js';
import { generateCommand } from './generate.js';
import { forwardCommand } from './forward.js';
import { detokenizeCommand, tokenizeCommand } from './tokenize.js';
import { infoCommand } from './info.js';

/** Every command of the CLI, in the order `mpt --help` lists them. One file per command. */
export const commands: Command[] = [
  generateCommand,
  forwardCommand,
  tokenizeCommand,
  detokenizeCommand,
  infoCommand,
];
