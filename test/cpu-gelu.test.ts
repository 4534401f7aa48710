import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gelu } from '../src/backend/cpu/kernels/gelu.js';
import { geluFast } from '../src/backend/cpu/kernels/gelu-fast.js';

test('the fast GELU is within 2 float32 half-ulps (+1e-10) of the exact series on a dense grid', () => {
  let worst = 0, at = 0;
  for (let i = -120000; i <= 120000; i++) {
    const x = i * 1e-4 + 3.7e-6; // off the grid's round numbers
    const exact = gelu(x), fast = geluFast(x);
    const error = Math.abs(fast - exact) / (Math.abs(exact) * 2 ** -24 + 1e-10);
    if (error > worst) { worst = error; at = x; }
  }
  assert.ok(worst <= 2, `worst error ${worst} half-ulps at x = ${at}`);
  assert.equal(geluFast(0), 0);
  assert.equal(geluFast(-40), -0);
  assert.equal(geluFast(40), 40);
});
