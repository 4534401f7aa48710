import { writeFileAtomicSync } from '../util/atomic.js';
import type { MetricRecord } from './metrics.js';

/** A self-contained SVG of the training loss (and eval loss as dots) against the step. */
export function writeLossPlot(path: string, records: readonly MetricRecord[]): void {
  writeFileAtomicSync(path, lossPlotSvg(records));
}

export function lossPlotSvg(records: readonly MetricRecord[]): string {
  const W = 720, H = 400, left = 60, right = 20, top = 30, bottom = 45;
  const train = records.filter((r) => r.kind === 'train' && Number.isFinite(r.loss));
  const evals = records.filter((r) => r.kind === 'eval' && Number.isFinite(r.loss));
  const all = [...train, ...evals];
  const head = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`;
  if (all.length === 0) return `${head}<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no data yet</text></svg>\n`;
  const maxStep = Math.max(1, ...all.map((r) => r.step));
  let lo = Math.min(...all.map((r) => r.loss)), hi = Math.max(...all.map((r) => r.loss));
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const x = (s: number) => left + ((W - left - right) * s) / maxStep;
  const y = (l: number) => top + ((H - top - bottom) * (hi - l)) / (hi - lo);
  const parts = [head, `<rect width="${W}" height="${H}" fill="white"/>`, `<text x="${W / 2}" y="18" text-anchor="middle">loss</text>`];
  for (let i = 0; i <= 4; i++) {
    const l = lo + ((hi - lo) * i) / 4;
    parts.push(`<line x1="${left}" x2="${W - right}" y1="${y(l).toFixed(1)}" y2="${y(l).toFixed(1)}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${(y(l) + 4).toFixed(1)}" text-anchor="end">${l.toFixed(3)}</text>`);
    const s = Math.round((maxStep * i) / 4);
    parts.push(`<text x="${x(s).toFixed(1)}" y="${H - bottom + 16}" text-anchor="middle">${s}</text>`);
  }
  parts.push(`<text x="${W / 2}" y="${H - 8}" text-anchor="middle">step</text>`);
  if (train.length > 0) {
    const points = train.map((r) => `${x(r.step).toFixed(1)},${y(r.loss).toFixed(1)}`).join(' ');
    parts.push(`<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="${points}"/>`);
  }
  for (const r of evals) parts.push(`<circle cx="${x(r.step).toFixed(1)}" cy="${y(r.loss).toFixed(1)}" r="3.5" fill="#d62728"/>`);
  parts.push(`<text x="${W - right}" y="${top - 8}" text-anchor="end"><tspan fill="#1f77b4">— train</tspan>  <tspan fill="#d62728">● eval</tspan></text>`);
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
