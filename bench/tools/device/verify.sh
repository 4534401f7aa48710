#!/usr/bin/env bash
# Usage on the GPU machine (after `source .device/inf/setup.sh`, from the main checkout):
#   bench/tools/device/verify.sh NAME [tests|infer|train|all]
# Runs the whole check of a slim build (.wt-NAME, from slim-build.sh): the CUDA test files, the inference
# bench and the training bench, each with the PyTorch baseline in the same call, while nvidia-smi logs the
# clocks and power every 250 ms into $OUT/smi.csv. Each part's log goes to $OUT/<part>.log. TRAIN_STEPS
# (default 12) sets the timed steps of the training bench, for mpt-ts and PyTorch alike: a longer window
# measures both at the power limit's steady state.
set -uo pipefail
name=${1:?usage: verify.sh NAME [tests|infer|train|all]}
what=${2:-all}
export MPT_FIXTURES=${MPT_FIXTURES:-/tmp/shared-inf/fixtures}
out=${OUT:-/tmp/verify-out}; mkdir -p "$out"
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,power.limit,temperature.gpu --format=csv,noheader -lms 250 >"$out/smi.csv" &
smi=$!
trap 'kill $smi 2>/dev/null' EXIT
cd ".wt-$name"
mark() { echo "== $1 $(date +%T)" | tee -a "$out/marks.txt"; }
if [[ $what == all || $what == tests ]]; then
  mark tests
  node --test dist/test/cuda-kernels.test.js dist/test/cuda-model.test.js dist/test/cuda-train-ops.test.js \
    dist/test/cuda-train.test.js dist/test/cuda-flash.test.js dist/test/cuda-flash-forward.test.js \
    dist/test/cuda-pdl.test.js >"$out/tests.log" 2>&1
  echo "tests rc=$?"; grep -E '^# (tests|pass|fail|skipped)' "$out/tests.log"
  grep -E '^not ok|^\s+not ok' "$out/tests.log" | head -30
fi
if [[ $what == all || $what == infer ]]; then
  mark infer
  node bin/mpt.js bench --device cuda --preset mpt-1b-redpajama-200b --torch bench/torch_baseline.py >"$out/infer.log" 2>&1
  echo "infer rc=$?"; tail -40 "$out/infer.log"
fi
if [[ $what == all || $what == train ]]; then
  mark train
  node bin/mpt.js bench train --microbatch 8 --steps ${TRAIN_STEPS:-12} --torch bench/torch_baseline.py >"$out/train.log" 2>&1
  echo "train rc=$?"; tail -60 "$out/train.log"
fi
mark end
