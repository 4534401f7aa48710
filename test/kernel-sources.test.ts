// Runs without a GPU: every kernel source, as kernels.ts hands it to NVRTC, carries its headers inside
// it. NVRTC gets no include path for the kernel folder, so a `#include "x.cuh"` left unspliced fails to
// compile only on a GPU machine (it did once: a trailing comment on the include line).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KERNEL_ARGS, kernelFolder, spliceHeaders } from '../src/backend/cuda/kernels.js';
import '../src/backend/cuda/training.js';  // registers the training kernels' argument lists

test('every kernel source has its #include "….cuh" headers spliced in, the comment-carrying forms too', () => {
  const dir = kernelFolder();
  const files = readdirSync(dir).filter((f) => f.endsWith('.cu'));
  assert.ok(files.length > 10, `only ${files.length} kernel sources found in ${dir}`);
  for (const file of files) {
    const spliced = spliceHeaders(dir, file, readFileSync(join(dir, file), 'utf8'));
    const left = spliced.split('\n').filter((line) => /^\s*#\s*include\s*"/.test(line));
    assert.deepEqual(left, [], `${file}: includes NVRTC cannot resolve`);
  }
  const withComment = spliceHeaders(dir, 'x.cu', '#include "wgmma.cuh"  // why\nnext();\n');
  assert.ok(withComment.includes(readFileSync(join(dir, 'wgmma.cuh'), 'utf8')) && withComment.includes('#line 2 "x.cu"\nnext();'));
});

// Runs without a GPU: the wgmma kernel's headers reach NVRTC inside its source (so the compile cache's
// key covers them), and the lines after each header keep their numbers in error messages.
test('flash_backward_wgmma.cu: its headers are spliced into the source NVRTC compiles', () => {
  const dir = kernelFolder(), file = 'flash_backward_wgmma.cu';
  const text = readFileSync(join(dir, file), 'utf8'), spliced = spliceHeaders(dir, file, text);
  assert.ok(!/^#include "/m.test(spliced), 'an #include of the kernel folder is left');
  for (const header of ['wgmma.cuh', 'flash_common.cuh', 'flash_backward_ds.cuh']) {
    assert.ok(spliced.includes(readFileSync(join(dir, header), 'utf8')), `${header} is not in the spliced source`);
  }
  const lines = text.split('\n'), last = lines.map((l) => l.startsWith('#include "')).lastIndexOf(true);
  assert.ok(spliced.includes(`#line ${last + 2} "${file}"\n${lines[last + 1]}`), 'the line after the last header lost its number');
});

// Runs without a GPU: every kernel has an argument list for its launches, of its own length. A kernel
// without one compiles and is then refused at its first launch (a device call was lost to that once).
test('every extern "C" kernel has a KERNEL_ARGS entry with one kind per parameter', () => {
  const dir = kernelFolder();
  let kernels = 0;
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.cu'))) {
    const text = readFileSync(join(dir, file), 'utf8');
    for (const [, name, params] of text.matchAll(/extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)/g)) {
      kernels++;
      const count = params.split(',').filter((p) => p.trim() !== '').length;
      assert.ok(KERNEL_ARGS[name] !== undefined, `${file}: ${name} has no argument list in KERNEL_ARGS`);
      assert.equal(KERNEL_ARGS[name].length, count, `${file}: ${name} takes ${count} parameters, KERNEL_ARGS lists ${KERNEL_ARGS[name].length}`);
    }
  }
  assert.ok(kernels > 40, `only ${kernels} kernels found in ${dir}`);
});
