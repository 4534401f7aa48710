import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RangeFile } from '../io/file-range.js';
import { readSafetensorsHeader, readSafetensorsTensor, writeSafetensors, type SafetensorsHeader } from '../io/safetensors.js';
import { FormatError, UserError } from '../util/errors.js';

/**
 * Training checkpoints: one folder per save, `ba<step>/`, holding
 *   model.safetensors      float32 master weights by canonical name
 *   optimizer.safetensors  AdamW moments, `m.<name>` and `v.<name>`
 *   state.json             step, tokens, optimizer step, scheduler and data position, seed, the run's
 *                          settings, and the byte size of both tensor files (the completeness check)
 * A save is written into a hidden temporary folder, every file synced, then the folder renamed into
 * place: a run killed during a save leaves only the temporary folder, which `latestCheckpoint` ignores
 * (and the next save clears), so autoresume falls back to the save before.
 */
export const STATE_FILE = 'state.json';
export const CHECKPOINT_FORMAT = 'mpt-ts-checkpoint/1';

export interface CheckpointState {
  format: typeof CHECKPOINT_FORMAT;
  /** Optimizer steps (batches) done. */
  step: number;
  tokens: number;
  optimizerStep: number;
  /** The data position: batches are a pure function of (seed, step, rank, world), so the next step is all it takes. */
  dataStep: number;
  seed: number;
  /** The normalized model config and anything else the run needs to continue or export (tokenizer, format). */
  run: Record<string, unknown>;
  files: Record<string, number>;
}

export interface CheckpointTensors {
  params: Map<string, Float32Array>;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

/**
 * What a save writes: each tensor's values, or a function that gives them when the writer reaches the
 * tensor (a download from the device), so that a save holds one tensor on the host at a time rather
 * than the whole state (15.7 GB for a 1.3B model).
 */
type Values = Float32Array | (() => Float32Array);
export interface CheckpointSource {
  params: Map<string, Values>;
  m: Map<string, Values>;
  v: Map<string, Values>;
}

export const checkpointName = (step: number) => `ba${step}`;

export async function saveCheckpoint(
  folder: string, state: Omit<CheckpointState, 'format' | 'files'>, tensors: CheckpointSource, shapes: Map<string, number[]>,
): Promise<{ dir: string; bytes: number }> {
  mkdirSync(folder, { recursive: true });
  for (const entry of readdirSync(folder)) if (entry.startsWith('.ba') && entry.endsWith('.tmp')) rmSync(join(folder, entry), { recursive: true, force: true });
  const final = join(folder, checkpointName(state.step));
  const tmp = join(folder, `.${checkpointName(state.step)}.${process.pid}.tmp`);
  mkdirSync(tmp, { recursive: true });
  const asBytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const entries = (prefix: string, map: Map<string, Values>, shapes: Map<string, number[]>) =>
    [...map].map(([name, values]) => {
      const shape = shapes.get(name) ?? (typeof values === 'function' ? undefined : [values.length]);
      if (!shape) throw new Error(`saveCheckpoint: no shape for ${name}`);
      return { name: `${prefix}${name}`, dtype: 'float32' as const, shape, data: typeof values === 'function' ? () => asBytes(values()) : asBytes(values) };
    });
  await writeSafetensors(join(tmp, 'model.safetensors'), entries('', tensors.params, shapes));
  await writeSafetensors(join(tmp, 'optimizer.safetensors'), [...entries('m.', tensors.m, shapes), ...entries('v.', tensors.v, shapes)]);
  const files = Object.fromEntries(['model.safetensors', 'optimizer.safetensors'].map((f) => [f, statSync(join(tmp, f)).size]));
  const full: CheckpointState = { format: CHECKPOINT_FORMAT, ...state, files };
  const stateFile = join(tmp, STATE_FILE);
  writeFileSync(stateFile, JSON.stringify(full, null, 2) + '\n');
  syncPath(stateFile);
  syncPath(tmp);
  rmSync(final, { recursive: true, force: true }); // a save of the same step from an earlier, abandoned run
  renameSync(tmp, final);
  syncPath(folder);
  return { dir: final, bytes: Object.values(files).reduce((sum, n) => sum + n, 0) };
}

/** Remove all but the newest `keep` complete checkpoints (keep ≤ 0 keeps everything, as Composer's -1). */
export function pruneCheckpoints(folder: string, keep: number): void {
  if (keep <= 0) return;
  const all = listCheckpoints(folder);
  for (const c of all.slice(0, Math.max(0, all.length - keep))) rmSync(c.dir, { recursive: true, force: true });
}

/** Complete checkpoints of a save folder, oldest first. */
export function listCheckpoints(folder: string): Array<{ dir: string; step: number }> {
  if (!existsSync(folder)) return [];
  return readdirSync(folder)
    .map((name) => ({ name, match: /^ba(\d+)$/.exec(name) }))
    .filter((e) => e.match !== null && isComplete(join(folder, e.name)))
    .map((e) => ({ dir: join(folder, e.name), step: Number(e.match![1]) }))
    .sort((a, b) => a.step - b.step);
}

/** The newest complete checkpoint of a save folder (autoresume), or null. */
export function latestCheckpoint(folder: string): string | null {
  const all = listCheckpoints(folder);
  return all.length > 0 ? all[all.length - 1].dir : null;
}

function isComplete(dir: string): boolean {
  try {
    const state = JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')) as CheckpointState;
    return state.format === CHECKPOINT_FORMAT && Object.entries(state.files).every(([f, size]) => statSync(join(dir, f)).size === size);
  } catch {
    return false;
  }
}

/**
 * A checkpoint folder, or a save folder (its newest checkpoint). Errors name the file and the problem.
 */
export function resolveCheckpoint(path: string): string {
  if (!existsSync(path)) throw new UserError(`${path}: no such checkpoint`);
  if (existsSync(join(path, STATE_FILE))) return path;
  const latest = latestCheckpoint(path);
  if (!latest) throw new UserError(`${path}: neither a checkpoint (no ${STATE_FILE}) nor a save folder holding a complete one`);
  return latest;
}

export function readCheckpointState(dir: string): CheckpointState {
  const file = join(dir, STATE_FILE);
  let state: CheckpointState;
  try {
    state = JSON.parse(readFileSync(file, 'utf8')) as CheckpointState;
  } catch (error) {
    throw new FormatError(file, `cannot be read as a checkpoint state (${(error as Error).message})`);
  }
  if (state.format !== CHECKPOINT_FORMAT) throw new FormatError(file, `format ${JSON.stringify(state.format)}, expected ${CHECKPOINT_FORMAT}`);
  for (const [f, size] of Object.entries(state.files)) {
    const actual = existsSync(join(dir, f)) ? statSync(join(dir, f)).size : -1;
    if (actual !== size) throw new FormatError(join(dir, f), actual < 0 ? 'is missing' : `has ${actual} bytes, the checkpoint recorded ${size} (truncated or replaced)`);
  }
  return state;
}

/**
 * A checkpoint's tensors read one at a time, so that a resume or an export of a 1.3B model holds one
 * tensor on the host rather than its whole 15.7 GB state: params from model.safetensors, the AdamW
 * moments `m` and `v` from optimizer.safetensors.
 */
export class CheckpointReader {
  private constructor(
    readonly dir: string,
    readonly state: CheckpointState,
    private readonly files: { params: RangeFile; optimizer: RangeFile },
    private readonly headers: { params: SafetensorsHeader; optimizer: SafetensorsHeader },
  ) {}

  static async open(dir: string): Promise<CheckpointReader> {
    const state = readCheckpointState(dir);
    const params = await RangeFile.open(join(dir, 'model.safetensors'));
    let optimizer: RangeFile | null = null;
    try {
      optimizer = await RangeFile.open(join(dir, 'optimizer.safetensors'));
      return new CheckpointReader(dir, state, { params, optimizer }, { params: await readSafetensorsHeader(params), optimizer: await readSafetensorsHeader(optimizer) });
    } catch (error) {
      await params.close();
      await optimizer?.close();
      throw error;
    }
  }

  /** The names a group holds (without the moments' `m.` / `v.` prefix). */
  names(group: 'params' | 'm' | 'v'): string[] {
    const { entries } = group === 'params' ? this.headers.params : this.headers.optimizer;
    const prefix = group === 'params' ? '' : `${group}.`;
    return [...entries.keys()].filter((n) => n.startsWith(prefix)).map((n) => n.slice(prefix.length));
  }

  /** One tensor's float32 values; a missing one is an error naming the tensor and the file. */
  async read(group: 'params' | 'm' | 'v', name: string): Promise<Float32Array> {
    const [file, header, key] = group === 'params'
      ? [this.files.params, this.headers.params, name]
      : [this.files.optimizer, this.headers.optimizer, `${group}.${name}`];
    const entry = header.entries.get(key);
    if (!entry) throw new FormatError(file.path, `no tensor ${key}: the checkpoint does not match the run's model`);
    if (entry.dtype !== 'float32') throw new FormatError(file.path, `tensor ${key} is ${entry.dtype}, a checkpoint holds float32`);
    const bytes = await readSafetensorsTensor(file, entry);
    const values = new Float32Array(bytes.length / 4);
    new Uint8Array(values.buffer).set(bytes);
    return values;
  }

  async close(): Promise<void> {
    await this.files.params.close();
    await this.files.optimizer.close();
  }
}

/** A whole checkpoint on the host (tests, small models); runs read it tensor by tensor (CheckpointReader). */
export async function loadCheckpoint(dir: string): Promise<{ state: CheckpointState; tensors: CheckpointTensors }> {
  const reader = await CheckpointReader.open(dir);
  try {
    const group = async (g: 'params' | 'm' | 'v') => {
      const out = new Map<string, Float32Array>();
      for (const name of reader.names(g)) out.set(name, await reader.read(g, name));
      return out;
    };
    return { state: reader.state, tensors: { params: await group('params'), m: await group('m'), v: await group('v') } };
  } finally {
    await reader.close();
  }
}

function syncPath(path: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems refuse to sync a directory; the rename is still atomic there.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
