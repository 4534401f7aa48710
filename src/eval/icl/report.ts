import type { IclResult } from './run.js';

/** A plain-text table of per-task accuracy, one row per task × shots (× category). */
export function formatIclTable(results: readonly IclResult[]): string {
  const header = ['task', 'type', 'accuracy', 'correct', 'total'];
  const rows = results.map((r) => [r.name, r.taskType, r.accuracy.toFixed(4), String(r.correct), String(r.total)]);
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((row) => row[c]!.length)));
  const line = (cells: string[]) => cells.map((cell, c) => (c >= 2 ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n') + '\n';
}
