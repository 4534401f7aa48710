/**
 * A progress bar on stderr for long work (downloads, tokenizing, evaluation). On a terminal it redraws
 * one line; elsewhere (CI logs, pipes) it prints a line every few seconds so logs stay short.
 */
export interface ProgressOptions {
  label: string;
  total?: number; // unknown totals show a count and a rate only
  unit?: 'bytes' | string;
  stream?: NodeJS.WriteStream;
  quiet?: boolean;
}

export class Progress {
  private done = 0;
  private readonly started = Date.now();
  private lastDraw = 0;
  private readonly stream: NodeJS.WriteStream;
  private readonly interactive: boolean;

  constructor(private readonly options: ProgressOptions) {
    this.stream = options.stream ?? process.stderr;
    this.interactive = Boolean(this.stream.isTTY);
  }

  /** Mark `amount` more units done (or set the absolute count with `set`). */
  tick(amount = 1): void {
    this.set(this.done + amount);
  }

  set(done: number): void {
    this.done = done;
    const now = Date.now();
    if (now - this.lastDraw >= (this.interactive ? 100 : 5000)) this.draw(now);
  }

  finish(): void {
    if (this.options.quiet) return;
    this.draw(Date.now());
    if (this.interactive) this.stream.write('\n');
  }

  private draw(now: number): void {
    if (this.options.quiet) return;
    this.lastDraw = now;
    const seconds = Math.max((now - this.started) / 1000, 1e-3);
    const rate = this.done / seconds;
    const { total, label } = this.options;
    const parts = [label];
    if (total !== undefined && total > 0) {
      const fraction = Math.min(this.done / total, 1);
      const width = 24;
      const filled = Math.round(fraction * width);
      parts.push(`[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(fraction * 100).toFixed(1)}%`);
      parts.push(`${this.format(this.done)}/${this.format(total)}`);
      if (rate > 0 && this.done < total) parts.push(`ETA ${formatDuration((total - this.done) / rate)}`);
    } else {
      parts.push(this.format(this.done));
    }
    parts.push(`${this.format(rate)}/s`);
    const line = parts.join('  ');
    this.stream.write(this.interactive ? `\r${line}\x1b[K` : `${line}\n`);
  }

  private format(n: number): string {
    if (this.options.unit === 'bytes') return formatBytes(n);
    const unit = this.options.unit ? ` ${this.options.unit}` : '';
    if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M${unit}`;
    if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k${unit}`;
    return `${Number.isInteger(n) ? n : n.toFixed(1)}${unit}`;
  }
}

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(r).padStart(2, '0')}s` : `${r}s`;
}
