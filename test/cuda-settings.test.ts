import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mbFromEnv } from '../src/backend/cuda/index.js';
import { UserError } from '../src/util/errors.js';

// The CUDA backend's size settings are given in MiB; the defaults are MiB too (a default of 8 once
// meant 8 bytes, which silently turned the decode step's L2 prefetch off).
test('mbFromEnv: MiB from the environment, the fallback in MiB, bad values named', () => {
  const name = 'MPT_TEST_SIZE_MIB';
  delete process.env[name];
  assert.equal(mbFromEnv(name, 8), 8 * 2 ** 20);
  process.env[name] = '';
  assert.equal(mbFromEnv(name, 8), 8 * 2 ** 20);
  process.env[name] = '0';
  assert.equal(mbFromEnv(name, 8), 0);
  process.env[name] = '0.5';
  assert.equal(mbFromEnv(name, 8), 2 ** 19);
  for (const bad of ['-1', 'lots']) {
    process.env[name] = bad;
    assert.throws(() => mbFromEnv(name, 8), (e: unknown) => e instanceof UserError && e.message.includes(name) && e.message.includes(bad));
  }
  delete process.env[name];
});
