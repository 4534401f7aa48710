import { UserError } from '../../util/errors.js';

/**
 * The dense bf16 tensor-core peak (FLOP/s, float32 accumulation, no sparsity) that NVIDIA's data sheets
 * give for a card, found by its device name, for the MFU of `mpt train`'s console line. BASELINES.md's
 * MFU is over the H100 SXM's 989 TFLOP/s; the H200 SXM has the same tensor cores and clocks. A card not
 * in the list gets null (the line says `MFU n/a` rather than a figure over another card's peak);
 * MPT_PEAK_TFLOPS sets it for any card.
 */
/** The H100 SXM's: BASELINES.md's MFU denominator (`mpt bench train` uses it on every card). */
export const H100_SXM_BF16_PEAK = 989e12;

const PEAKS: Array<[RegExp, number]> = [
  [/H100.*PCIe/i, 756e12],
  [/H[12]00.*NVL/i, 835e12],
  [/H100|H200|H800|GH200/i, H100_SXM_BF16_PEAK],
  [/A100|A800/i, 312e12],
  [/L40S/i, 362e12],
  [/\bL4\b/i, 121e12],
  [/\bA10\b|A10G/i, 125e12],
];

export function peakBf16Flops(deviceName: string, env: NodeJS.ProcessEnv = process.env): number | null {
  const override = env.MPT_PEAK_TFLOPS;
  if (override !== undefined && override !== '') {
    const tflops = Number(override);
    if (!(tflops > 0)) throw new UserError(`MPT_PEAK_TFLOPS must be a positive number of TFLOP/s, got "${override}"`);
    return tflops * 1e12;
  }
  for (const [pattern, flops] of PEAKS) if (pattern.test(deviceName)) return flops;
  return null;
}
