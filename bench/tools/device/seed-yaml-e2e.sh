#!/usr/bin/env bash
# Usage on the GPU machine (after `source .device/inf/setup.sh`, from the main checkout):
#   bench/tools/device/seed-yaml-e2e.sh NAME [DATA_DIR] [STEPS]
# The seed run's YAML (yamls/mpt-1b-redpajama-200b.yaml, the 1.3B model exactly) end to end through the
# real training loop on CUDA, as a user runs it, on a small prepared dataset (DATA_DIR; without one, made
# here by `mpt data prepare --val-fraction 0.05` from Python source files of the machine's site-packages, a
# slice for each RedPajama source folder, with the embedded model's GPT-NeoX tokenizer): STEPS batches (default 20) of 16 sequences (microbatch 8, two
# accumulation steps), eval and a checkpoint every STEPS/2; then the last checkpoint removed and the run
# resumed from the middle one (autoresume); then `mpt export` (bf16, the tokenizer from a Hugging Face cache
# laid out here) and `mpt generate` from the exported folder on CUDA. Logs go to $OUT/e2e-*.log.
set -uo pipefail
name=${1:?usage: seed-yaml-e2e.sh NAME [DATA_DIR] [STEPS]}
root=$(pwd)
tokenizer=$root/models/mpt-demo # the GPT-NeoX-20B tokenizer files (tracked, so carried with the tree)
steps=${3:-20}
half=$((steps / 2))
out=${OUT:-/tmp/e2e-out}; mkdir -p "$out"
work=$(mktemp -d /tmp/e2e.XXXX)
data=${2:-}
[[ -n $data ]] && data=$(cd "$data" && pwd)
cd ".wt-$name"
mark() { echo "== $1 $(date +%T)" | tee -a "$out/e2e-marks.txt"; }
if [[ -z $data ]]; then
  mark "data prepare"
  data=$work/tokens
  site=$(python3 -c 'import os, transformers; print(os.path.dirname(os.path.dirname(transformers.__file__)))')
  mapfile -t files < <(find "$site" -name '*.py' -size +8k -size -200k | sort | head -700)
  sources=(common_crawl c4 github wikipedia book arxiv stackexchange)
  for source in "${sources[@]}"; do mkdir -p "$work/corpus/$source"; done
  for i in "${!files[@]}"; do cp "${files[i]}" "$work/corpus/${sources[i % 7]}/$i.txt"; done # dealt out in turn
  node bin/mpt.js data prepare "$work/corpus" "$data" --tokenizer "$tokenizer" --val-fraction 0.05 --quiet | tail -9
fi
train() {
  node bin/mpt.js train yamls/mpt-1b-redpajama-200b.yaml --device cuda \
    train_loader.dataset.local="$data" eval_loader.dataset.local="$data" \
    global_train_batch_size=16 max_duration="${steps}ba" scheduler.t_warmup=5ba \
    eval_interval="${half}ba" eval_subset_num_batches=2 \
    save_folder="$work/ck" save_interval="${half}ba" console_log_interval=1 "$@"
}
mark "train $steps steps"
train >"$out/e2e-train.log" 2>&1; echo "train rc=$?"; grep -vE '^step ([2-9]|1[0-9])/' "$out/e2e-train.log" | tail -12
ls -la "$work/ck" | tee -a "$out/e2e-marks.txt"; du -sh "$work/ck"/ba* | tee -a "$out/e2e-marks.txt"
mark "resume from ba$half"
rm -rf "$work/ck/ba$steps"
train autoresume=true >"$out/e2e-resume.log" 2>&1; echo "resume rc=$?"; tail -6 "$out/e2e-resume.log"
echo "losses after step $half, first run then resumed run:"
for f in e2e-train e2e-resume; do sed -n "s/^step \([0-9]*\)\/$steps .* loss \([0-9.]*\) .*/\1 \2/p" "$out/$f.log" | awk -v h="$half" '$1 > h' | tr '\n' ' '; echo; done
mark export
# The tokenizer as the Hugging Face cache holds it (models--ORG--NAME/refs/main, snapshots/COMMIT/…): no network here.
hub="$work/hub/models--EleutherAI--gpt-neox-20b"; commit=0123456789abcdef0123456789abcdef01234567
mkdir -p "$hub/refs" "$hub/snapshots/$commit" && echo -n $commit >"$hub/refs/main"
cp "$tokenizer"/{tokenizer.json,tokenizer_config.json,special_tokens_map.json} "$hub/snapshots/$commit/"
HF_HUB_CACHE="$work/hub" node bin/mpt.js export "$work/ck" "$work/hf" --dtype bfloat16 >"$out/e2e-export.log" 2>&1; echo "export rc=$?"; cat "$out/e2e-export.log"; ls -la "$work/hf"
mark generate
node bin/mpt.js generate --model "$work/hf" --device cuda --max-new-tokens 24 "The history of the Roman Empire" >"$out/e2e-generate.log" 2>&1; echo "generate rc=$?"; tail -8 "$out/e2e-generate.log"
node bin/mpt.js info --model "$work/hf" 2>&1 | head -12
mark end
rm -rf "$work"
