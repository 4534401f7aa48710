import type { Command } from '../main.js';

/** Every command of the CLI, in the order `mpt --help` lists them. One file per command. */
export const commands: Command[] = [];
