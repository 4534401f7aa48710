import { test } from 'node:test';
import assert from 'node:assert/strict';
import { peakBf16Flops } from '../src/backend/cuda/peak-flops.js';
import { UserError } from '../src/util/errors.js';

test("the card's dense bf16 peak by its device name, the override, and null for a card not listed", () => {
  assert.equal(peakBf16Flops('NVIDIA H100 80GB HBM3', {}), 989e12); // BASELINES.md's denominator
  assert.equal(peakBf16Flops('NVIDIA H200', {}), 989e12);
  assert.equal(peakBf16Flops('NVIDIA H100 PCIe', {}), 756e12);
  assert.equal(peakBf16Flops('NVIDIA H100 NVL', {}), 835e12);
  assert.equal(peakBf16Flops('NVIDIA A100-SXM4-80GB', {}), 312e12);
  assert.equal(peakBf16Flops('NVIDIA L4', {}), 121e12);
  assert.equal(peakBf16Flops('NVIDIA L40S', {}), 362e12);
  assert.equal(peakBf16Flops('NVIDIA GeForce RTX 4090', {}), null);
  assert.equal(peakBf16Flops('NVIDIA GeForce RTX 4090', { MPT_PEAK_TFLOPS: '165' }), 165e12);
  assert.throws(() => peakBf16Flops('NVIDIA H100', { MPT_PEAK_TFLOPS: 'fast' }), UserError);
});
