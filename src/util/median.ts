/**
 * The median: the middle value of an odd count, the mean of the two middle values of an even one, as
 * Python's statistics.median (bench/torch_baseline.py's), so that both sides of a comparison take the same.
 * NaN for none.
 */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b), h = s.length >> 1;
  return s.length % 2 === 1 ? s[h] : (s[h - 1] + s[h]) / 2;
}
