/**
 * The data pipeline: raw text → tokens → packed samples → a seeded mixture the training loop reads.
 *
 * Preparing (once per dataset; `mpt data prepare`, `mpt data merge`):
 *   prepareDataset({ input, output, tokenizer, seqLen, valFraction?, shard?: {index, count}, threads?,
 *                    onBadLine?: 'fail'|'skip', sources?, force?, onNotice? }): Promise<PrepareResult>
 *     input: one folder per source (RedPajama layout) of .jsonl[.gz|.zst] with a `text` field, or .txt.
 *     Output: `<source>/<train|val>.<part>.<k>.bin` shards (uint16 LE, whole samples of seqLen),
 *     `parts/<part>.json`, and `manifest.json` (the index) when there is one part.
 *   mergeParts(datasetDir): Promise<DatasetManifest>   checks and joins the parts of a --shard i/N run.
 *   readManifest(datasetDir): DatasetManifest
 *
 * Training (a pure function of seed, step, rank and world size; nothing to save for resume):
 *   const mixture = openMixture(loadMixtureConfig('data.yaml'))   // or parseMixtureConfig({...})
 *   mixture.batch(step, rank, worldSize, microbatchIndex?, microbatch?) → {
 *     tokens: Int32Array [rows × seqLen], rows, seqLen, sources: string[], draws: {source, index, epoch}[] }
 *     Step s covers global samples [s·B, (s+1)·B), B = global_batch; rank r of W takes the r-th
 *     contiguous B/W of them; microbatch m of size `microbatch` takes the m-th piece of that.
 *     Each global sample picks source s with probability w_s (a keyed hash of seed and index), and
 *     the k-th pick of s serves permutation_{seed,s,⌊k/n_s⌋}(k mod n_s): no repeat within an epoch.
 *   mixture.samplesPerEpoch, mixture.sourceNames, mixture.probabilities, mixture.notices
 *   mixture.validation.{samples, batches(B), batch(i, B, rank?, worldSize?)}   fixed held-out order
 *   mixture.close()
 *
 * The demo corpus (`mpt data demo`): buildDemoCorpus({ output, bytesPerSource? }) assembles real
 * text that this machine has (Debian's /usr/share, installed packages' source) in the same layout.
 */
export { prepareDataset, type PrepareOptions, type PrepareResult } from './prepare.js';
export { mergeParts } from './merge.js';
export { readManifest, type DatasetManifest, type SourceStats, type SplitStats, type Split } from './manifest.js';
export { openMixture, openValidationSplit, type Mixture, type Batch, type ValidationSet } from './mixture.js';
export { loadMixtureConfig, parseMixtureConfig, resolveWeights, PRESETS, DEFAULT_PRESET, type MixtureConfig } from './mixture-config.js';
export { MixtureSchedule, type Draw } from './schedule.js';
export { listInputs, parseShardSpec, assignFiles, REDPAJAMA_SOURCES } from './sources.js';
export { readDocuments, type Document, type BadLinePolicy } from './read-documents.js';
export { buildDemoCorpus, type DemoOptions, type DemoResult } from './demo.js';
