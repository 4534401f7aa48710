/**
 * `mpt bench --device cuda`: decode tokens/s at batch 1 and 16 (128 new tokens after a 16-token
 * prompt), the prefill time of one 2048-token prompt, peak GPU memory, and a per-kernel breakdown of
 * a decode step and a prefill; with the PyTorch baseline (bench/torch_baseline.py) run in the same
 * command when asked, so each figure has its ratio. Weights are random, made on the GPU.
 *
 *   node dist/src/bench/cuda-bench.js [--preset mpt-1b-redpajama-200b] [--torch bench/torch_baseline.py] [--json out.json] [--decode-only]
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { CudaBackend, type CudaTensor } from '../backend/cuda/index.js';
import { CudaEvent } from '../backend/cuda/driver.js';
import type { CudaDecoder, DecoderOptions, DecoderParams } from '../backend/cuda/decoder.js';
import { alibiSlopes, MPT_1B_REDPAJAMA_200B, mlpHidden, type MptConfig } from '../model/config.js';
import { UserError } from '../util/errors.js';
import { median } from '../util/median.js';

export interface CudaBenchOptions {
  preset?: string;
  /** Path of bench/torch_baseline.py to run for the baseline (python3 with torch). */
  torch?: string | null;
  promptTokens?: number;
  newTokens?: number;
  prefillTokens?: number;
  batches?: number[];
  repeats?: number;
  log?: (line: string) => void;
  /** Only the decode timings and their variants (no step breakdown, GEMM tables or prefill). */
  decodeOnly?: boolean;
}

export interface CudaBenchResult {
  device: string;
  config: string;
  decode: { batch: number; tokensPerSecond: number; msPerStep: number }[];
  prefill: { tokens: number; ms: number };
  peakMemoryBytes: number;
  breakdown: { decode: Record<string, Record<string, number>>; prefill: Record<string, number> };
  gemms: Record<string, Record<string, { skinnyUs: number; cublasUs: number; skinnyGBs: number; cublasGBs: number }>>;
  torch: Record<string, number> | null;
}

const PRESETS: Record<string, MptConfig> = { 'mpt-1b-redpajama-200b': MPT_1B_REDPAJAMA_200B };

/** Random bf16 weights on the device, shaped as the model's parameters. */
export function randomParams(be: CudaBackend, c: MptConfig): DecoderParams {
  let seed = 1;
  const normal = (shape: number[], std = 0.02) => be.randomNormal(shape, seed++, 0, std);
  const norm = () => ({ weight: be.randomNormal([c.dModel], seed++, 1, 0.1), bias: null });
  const d = c.dModel, h = mlpHidden(c);
  return {
    wte: normal([c.vocabSize, d]), wpe: null, lmHead: null,
    blocks: Array.from({ length: c.nLayers }, () => ({
      ln1: norm(), wqkv: { weight: normal([3 * d, d]), bias: null },
      qLn: c.qkLn ? norm() : null, kLn: c.qkLn ? norm() : null,
      out: { weight: normal([d, d]), bias: null }, ln2: norm(),
      up: { weight: normal([h, d]), bias: null }, down: { weight: normal([d, h]), bias: null },
    })),
    lnF: norm(),
  };
}


function randomPrompt(batch: number, t: number, vocab: number, seed: number): Int32Array {
  let s = seed >>> 0;
  return Int32Array.from({ length: batch * t }, () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return 2 + (s % (vocab - 200)); });
}

/** Per-stage device time of one eager run of `fn`, with an event after every stage. */
function breakdown(be: CudaBackend, dec: CudaDecoder, fn: () => void): Record<string, number> {
  const marks: { name: string; ev: CudaEvent }[] = [];
  const start = new CudaEvent(be.ctx);
  start.record();
  dec.onStage = (name) => { const ev = new CudaEvent(be.ctx); ev.record(); marks.push({ name, ev }); };
  try { fn(); } finally { dec.onStage = null; }
  be.synchronize();
  return collect(start, marks);
}

function collect(start: CudaEvent, marks: { name: string; ev: CudaEvent }[]): Record<string, number> {
  const out: Record<string, number> = {};
  let prev = start;
  for (const m of marks) {
    out[m.name] = (out[m.name] ?? 0) + m.ev.since(prev);
    prev = m.ev;
  }
  for (const m of marks) m.ev.destroy();
  start.destroy();
  return out;
}

/**
 * Per-stage time of a decode step inside a CUDA graph (event nodes between the stages), so that host
 * launch gaps do not count: this is the step as the benchmark runs it.
 */
function graphBreakdown(be: CudaBackend, dec: CudaDecoder): Record<string, number> {
  const marks: { name: string; ev: CudaEvent }[] = [];
  const start = new CudaEvent(be.ctx);
  dec.onStage = (name) => { const ev = new CudaEvent(be.ctx); ev.record(); marks.push({ name, ev }); };
  let graph;
  try {
    graph = be.captureGraph(() => { start.record(); dec.decodeBody(); });
  } finally { dec.onStage = null; }
  graph.replay();
  be.synchronize();
  graph.replay();
  be.synchronize();
  const out = collect(start, marks);
  graph.destroy();
  return out;
}

/**
 * The decode GEMMs alone: each weight kind over all layers in a row (so L2 holds none of them), as a
 * graph replayed 10 times; skinny_gemm.cu and cuBLASLt side by side, with the weight bytes streamed per second.
 */
function gemmTable(be: CudaBackend, c: MptConfig, params: DecoderParams, rows: number): Record<string, { skinnyUs: number; cublasUs: number; skinnyGBs: number; cublasGBs: number }> {
  const d = c.dModel, h = mlpHidden(c);
  const x = be.randomNormal([rows, h], 77, 0, 1), yb = be.alloc([rows, 3 * d]), yh = be.alloc([rows, h]), yf = be.alloc([rows, Math.max(c.vocabSize, h)], 'float32');
  const kinds: [string, (l: number) => [CudaTensor, CudaTensor, boolean, boolean]][] = [
    ['qkv', (l) => [params.blocks[l].wqkv.weight as CudaTensor, yb, false, false]],
    ['out (+= f32)', (l) => [params.blocks[l].out.weight as CudaTensor, yf, true, false]],
    ['up (+gelu)', (l) => [params.blocks[l].up.weight as CudaTensor, yh, false, true]],
    ['down (+= f32)', (l) => [params.blocks[l].down.weight as CudaTensor, yf, true, false]],
    ['logits (f32)', () => [params.wte as CudaTensor, yf, false, false]],
  ];
  const out: Record<string, { skinnyUs: number; cublasUs: number; skinnyGBs: number; cublasGBs: number }> = {};
  const saved = be.skinny;
  for (const [name, pick] of kinds) {
    const layers = name.startsWith('logits') ? 1 : c.nLayers;
    const time = (skinny: boolean) => {
      be.skinny = skinny;
      const run = () => { for (let l = 0; l < layers; l++) { const [w, y, acc, gelu] = pick(l); be.matmulInto(x, w, null, y, rows, acc, gelu); } };
      run(); // plans and modules before capture
      const graph = be.captureGraph(run);
      graph.replay();
      const a = new CudaEvent(be.ctx), b = new CudaEvent(be.ctx);
      a.record();
      for (let i = 0; i < 10; i++) graph.replay();
      b.record();
      const us = (b.since(a) * 1000) / (10 * layers);
      a.destroy(); b.destroy(); graph.destroy();
      return us;
    };
    const [w] = pick(0);
    const bytes = w.shape[0] * w.shape[1] * 2;
    const s = time(true), cb = time(false);
    out[name] = { skinnyUs: s, cublasUs: cb, skinnyGBs: bytes / s / 1e3, cublasGBs: bytes / cb / 1e3 };
    // Other block shapes of skinny_gemm.cu, for tuning (µs per GEMM).
    // (Two row tiles at 16 warps only up to unroll 2: 128 registers a thread is the bound at 512 threads.)
    for (const warps of [4, 8, 16]) for (const unroll of rows <= 8 ? [2, 4] : [1, 2, 4]) {
      if (w.shape[1] % (32 * warps * unroll) !== 0 || (rows > 8 && warps === 16 && unroll > 2)) continue;
      be.skinnyShape = { warps, unroll };
      (out[name] as Record<string, number>)[`w${warps}u${unroll}`] = time(true);
      be.skinnyShape = null;
    }
    // The shared-memory variant (MPT_SMEM_W) where it applies, at other warp counts (µs per GEMM).
    if (be.smemWeightsPlan(rows, w.shape[1], w.shape[0])) {
      for (const warps of [4, 8, 16]) {
        be.smemWeightsWarps = warps;
        (out[name] as Record<string, number>)[`smem${warps}`] = time(true);
        be.smemWeightsWarps = null;
      }
      const was = be.smemWeights;
      be.smemWeights = false;
      (out[name] as Record<string, number>).regs = time(true);
      be.smemWeights = was;
    }
  }
  be.skinny = saved;
  for (const t of [x, yb, yh, yf]) be.release(t);
  return out;
}

/**
 * Another setting of the decode step, timed beside the default (a fresh decoder and graph): a backend
 * switch (`set` applies it and returns its undo) and/or decoder options; `batches`: where it runs.
 */
interface DecodeVariant { label: string; batches?: number[]; set?: () => () => void; options?: DecoderOptions }

function decodeVariants(be: CudaBackend): DecodeVariant[] {
  // Each a fresh decoder and graph beside the default. (Block shapes of single GEMMs in the step —
  // QKV, up and logits at 8 warps × 4, the out-projection at 16 × 2 or 8 × 4, down at 8 × 4, several
  // together — the LayerNorm-prologue GEMMs L2-prefetching their next weights after the wait, the
  // shared-memory out-projection without the uniform carveout, the carveouts, the LayerNorm as a
  // kernel of its own, the prefetch at other sizes, with evict_last or evict_first lines or by the down
  // GEMM, and the batch-16 GEMMs bounded to 4 blocks an SM were measured in the runs
  // bench/RESULTS-cuda.md records; programmatic dependent launch off last at 733 / 10,024 tokens/s
  // against 866 / 11,579. The LayerNorm inside the QKV, up and logits GEMMs at two row tiles read
  // 10,938 / 11,059 without LN_f, against 11,628; x loaded a group at a time, skinny_gemm.cu X_LATE,
  // 10,721 at batch 16 at the same shapes, 11,434 with the up GEMM at unroll 4 and the down GEMM at 16
  // warps, against 11,609, and a tie at batch 1, 882 / 882: H100, 2026-11-28.)
  return [
    // Batch 1: the attention with 8 keys a warp in flight, the default before 16 (foldKeysInFlightFor:
    // every key of a short context loaded before the wait, one pass instead of two). Splits of 64 keys
    // (873 against 881 tokens/s), MPT_PRE_SMEM (a tie) and the out-projection's weights in shared memory
    // at one row (845) lost: H100, 2026-11-28, bench/RESULTS-cuda.md.
    {
      label: 'attention with 8 keys a warp in flight (before)', batches: [1],
      set: () => { const was = be.foldKeysInFlight; be.foldKeysInFlight = 8; return () => { be.foldKeysInFlight = was; }; },
    },
    // The before of upPrefetchBytes at two row tiles (8 MB; 2 MB lost: 11,618 against 11,642).
    { label: 'out-projection prefetches 8 MB of the up weights into L2 (before)', batches: [16], options: { upPrefetchBytes: 8 * 2 ** 20 } },
  ];
}

export function runCudaBench(options: CudaBenchOptions = {}): CudaBenchResult {
  const log = options.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const presetName = options.preset ?? 'mpt-1b-redpajama-200b';
  const c = PRESETS[presetName];
  if (!c) throw new UserError(`unknown preset "${presetName}"; known: ${Object.keys(PRESETS).join(', ')}`);
  const promptTokens = options.promptTokens ?? 16, newTokens = options.newTokens ?? 128;
  const prefillTokens = options.prefillTokens ?? 2048, repeats = options.repeats ?? 5;
  const be = new CudaBackend({ dtype: 'bfloat16' });
  log(`device: ${be.device.name} (sm_${be.device.major}${be.device.minor}, ${be.device.multiprocessors} SMs)`);
  const params = randomParams(be, c);
  be.synchronize();
  const slopes = c.alibi ? alibiSlopes(c) : null;
  const result: CudaBenchResult = {
    device: be.device.name, config: presetName, decode: [], prefill: { tokens: prefillTokens, ms: 0 }, peakMemoryBytes: 0,
    breakdown: { decode: {}, prefill: {} }, gemms: {}, torch: null,
  };
  be.allocator.resetPeak();

  /**
   * Median wall time of `newTokens` decode steps after a prompt (a fresh decoder, so a fresh graph):
   * each step reading its tokens back, as streaming does, or (`backToBack`) all enqueued with one read
   * at the end, the GPU's own pace.
   */
  const timeDecode = (batch: number, backToBack = false, decoderOptions: DecoderOptions = {}): { ms: number; times: number[] } => {
    const dec = be.createDecoder(c, params, slopes, batch, promptTokens + newTokens + 1, decoderOptions);
    const times: number[] = [];
    for (let r = 0; r < repeats + 1; r++) {
      dec.prefill(randomPrompt(batch, promptTokens, c.vocabSize, 7 + r), null, { temperature: 0 });
      be.synchronize();
      const t0 = process.hrtime.bigint();
      if (backToBack) {
        for (let s = 0; s < newTokens; s++) dec.enqueueStep();
        dec.readIds();
      } else {
        for (let s = 0; s < newTokens; s++) dec.step();
      }
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (r > 0) times.push(ms); // the first run compiles, captures and warms up
    }
    dec.release();
    return { ms: median(times), times };
  };
  const logDecode = (batch: number, label: string, { ms, times }: { ms: number; times: number[] }) =>
    log(`decode batch ${batch}${label}: ${(batch * newTokens / (ms / 1000)).toFixed(0)} tokens/s (${(ms / newTokens).toFixed(3)} ms/step; runs ${times.map((x) => x.toFixed(1)).join(', ')} ms)`);
  for (const batch of options.batches ?? [1, 16]) {
    // Variants of the decode step in the same run (each a fresh decoder and graph), then the default's
    // figure, which is the one reported.
    for (const { label, batches, set, options: decoderOptions } of decodeVariants(be)) {
      if (batches && !batches.includes(batch)) continue;
      const undo = set?.();
      let other;
      try {
        other = timeDecode(batch, false, decoderOptions);
      } finally {
        undo?.();
      }
      logDecode(batch, `, ${label}`, other);
    }
    const timed = timeDecode(batch);
    result.decode.push({ batch, tokensPerSecond: (batch * newTokens) / (timed.ms / 1000), msPerStep: timed.ms / newTokens });
    logDecode(batch, '', timed);
    // The host gap: the same steps enqueued back to back with one read at the end.
    logDecode(batch, `, ${newTokens} steps back to back, one read at the end`, timeDecode(batch, true));
    if (options.decodeOnly) continue;
    const dec = be.createDecoder(c, params, slopes, batch, promptTokens + newTokens + 1);
    // Breakdown of one decode step inside a graph (event nodes between stages).
    dec.prefill(randomPrompt(batch, promptTokens, c.vocabSize, 99), null, { temperature: 0 });
    dec.step();
    result.breakdown.decode[`batch ${batch}`] = graphBreakdown(be, dec);
    dec.release();
    result.gemms[`batch ${batch}`] = gemmTable(be, c, params, batch);
  }

  if (!options.decodeOnly) {
    const dec = be.createDecoder(c, params, slopes, 1, prefillTokens + 1);
    const prompt = randomPrompt(1, prefillTokens, c.vocabSize, 3);
    // Milliseconds of each prefill between CUDA events, after two warm-up runs.
    const timePrefill = (): number[] => {
      const times: number[] = [];
      for (let r = 0; r < repeats + 2; r++) {
        const a = new CudaEvent(be.ctx), b = new CudaEvent(be.ctx);
        be.synchronize();
        a.record();
        dec.prefill(prompt, null, { temperature: 0 });
        b.record();
        if (r > 1) times.push(b.since(a));
        a.destroy(); b.destroy();
      }
      return times;
    };
    const times = timePrefill();
    result.prefill.ms = median(times);
    log(`prefill ${prefillTokens} tokens: ${result.prefill.ms.toFixed(2)} ms (runs ${times.map((x) => x.toFixed(2)).join(', ')})`);
    result.breakdown.prefill = breakdown(be, dec, () => dec.prefill(prompt, null, { temperature: 0 }));
    // The mma.sync flash kernel (the default before the wgmma one, and its fallback), same call.
    be.prefillWgmma = false;
    const alt = timePrefill();
    be.prefillWgmma = true;
    log(`prefill ${prefillTokens} tokens with the mma.sync flash kernel: ${median(alt).toFixed(2)} ms (runs ${alt.map((x) => x.toFixed(2)).join(', ')})`);
    dec.release();
  }
  const mem = be.memoryStats();
  result.peakMemoryBytes = mem.peak + 32 * 2 ** 20; // the allocator's peak and cuBLASLt's workspace
  log(`peak GPU memory: ${(result.peakMemoryBytes / 2 ** 30).toFixed(2)} GiB (allocator peak + cuBLASLt workspace); device in use: ${((mem.device.total - mem.device.free) / 2 ** 30).toFixed(2)} GiB`);

  if (options.torch) {
    log(`running the PyTorch baseline ${options.torch} …`);
    const out = execFileSync('python3', [options.torch, '--prompt', String(promptTokens), '--new', String(newTokens), '--prefill', String(prefillTokens)],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
    const line = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
    result.torch = line ? JSON.parse(line) : null;
  }
  return result;
}

export function formatResult(r: CudaBenchResult): string {
  const t = r.torch;
  const ratio = (ours: number, theirs: number | undefined, higherIsBetter: boolean) =>
    theirs ? `${(higherIsBetter ? ours / theirs : theirs / ours).toFixed(2)}×` : '—';
  const lines = [`| measure (${r.device}, ${r.config}) | mpt-ts CUDA | PyTorch eager + SDPA | speed-up |`, '| --- | --- | --- | --- |'];
  for (const d of r.decode) {
    const theirs = t?.[`decode_b${d.batch}_tokens_per_s`];
    lines.push(`| decode, batch ${d.batch} (tokens/s) | ${d.tokensPerSecond.toFixed(0)} | ${theirs?.toFixed(0) ?? '—'} | ${ratio(d.tokensPerSecond, theirs, true)} |`);
  }
  if (r.prefill.ms > 0) lines.push(`| prefill ${r.prefill.tokens} tokens (ms) | ${r.prefill.ms.toFixed(2)} | ${t?.prefill_ms?.toFixed(2) ?? '—'} | ${ratio(r.prefill.ms, t?.prefill_ms, false)} |`);
  lines.push(`| peak GPU memory (GiB) | ${(r.peakMemoryBytes / 2 ** 30).toFixed(2)} | ${t?.peak_memory_bytes ? (t.peak_memory_bytes / 2 ** 30).toFixed(2) : '—'} | |`);
  const table = (title: string, stages: Record<string, number>) => {
    const total = Object.values(stages).reduce((a, b) => a + b, 0);
    const rows = Object.entries(stages).sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `| ${k} | ${(v * 1000).toFixed(1)} | ${((100 * v) / total).toFixed(1)}% |`);
    return [``, `${title}, events between stages; total ${total.toFixed(3)} ms)`, '| stage | µs | share |', '| --- | --- | --- |', ...rows].join('\n');
  };
  for (const [k, v] of Object.entries(r.breakdown.decode)) lines.push(table(`decode step, ${k} (in a CUDA graph)`, v));
  for (const [k, v] of Object.entries(r.gemms)) {
    lines.push('', `decode GEMMs, ${k}: µs per GEMM and weight GB/s`, '| GEMM | skinny_gemm µs | GB/s | cuBLASLt µs | GB/s | skinny variants (warps, unroll: µs; smemN: weights in shared memory at N warps; regs: the register kernel\'s default) |', '| --- | --- | --- | --- | --- | --- |');
    for (const [name, g] of Object.entries(v)) {
      const variants = Object.entries(g).filter(([k]) => /^(w\d+u\d+|smem\d+|regs)$/.test(k)).map(([k, us]) => `${k} ${(us as number).toFixed(1)}`).join(', ');
      lines.push(`| ${name} | ${g.skinnyUs.toFixed(1)} | ${g.skinnyGBs.toFixed(0)} | ${g.cublasUs.toFixed(1)} | ${g.cublasGBs.toFixed(0)} | ${variants} |`);
    }
  }
  if (r.prefill.ms > 0) lines.push(table(`prefill of ${r.prefill.tokens} tokens (eager)`, r.breakdown.prefill));
  return lines.join('\n');
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const args = process.argv.slice(2);
  const r = runCudaBench({ preset: flag(args, 'preset'), torch: flag(args, 'torch') ?? null, repeats: Number(flag(args, 'repeats') ?? 5),
    decodeOnly: args.includes('--decode-only') });
  const json = flag(args, 'json');
  if (json) writeFileSync(json, JSON.stringify(r, null, 2));
  console.log(formatResult(r));
}
