#!/usr/bin/env bash
# Usage on the GPU machine (after `source .device/inf/setup.sh`, from the main checkout):
#   bench/tools/device/ratio.sh NAME [ROUNDS] [STEPS] [WARMUP]
# The training criterion's ratio (mpt-ts tokens/s over torch.compile + FlexAttention's) as a protocol
# rather than one pair of runs: ROUNDS (default 3) rounds, each one mpt-ts process (`mpt bench train
# --microbatch 8 --steps STEPS`, its default path, no PyTorch) and one PyTorch process
# (`bench/torch_baseline.py --train compile --steps STEPS`), alternating which goes first, so that both
# meet the card in the same states. Prints each round's medians and ratio, then the median of the
# rounds' ratios. Why: one pair's ratio moves by more than the criterion's margin from call to call (the
# card sits at its power cap, and its clocks drift; bench/RESULTS-cuda-train.md). The processes' logs are
# appended, under a header a round, to $OUT/ratio-mpt.log and $OUT/ratio-torch.log: two files whatever
# ROUNDS is (the device's reply returns 8 files at most; verify.sh writes 5).
# WARMUP (default 10, as `mpt bench train`): mpt-ts's warm-up steps (`--warmup`; it adds more while GEMM shapes still explore) and
# PyTorch's plus one (its first step compiles), as `mpt bench train --torch` gives them: the same for both.
set -uo pipefail
name=${1:?usage: ratio.sh NAME [ROUNDS] [STEPS] [WARMUP]}
rounds=${2:-3}
steps=${3:-12}
warmup=${4:-10}
out=${OUT:-/tmp/ratio-out}; mkdir -p "$out"
tmp=$(mktemp -d)
cd ".wt-$name"
mpt_ms() { # the median step of `mpt bench train` from its log
  sed -n 's/^median step \([0-9.]*\) ms:.*/\1/p' "$1" | head -1
}
torch_ms() { # ms_per_step of the baseline's JSON line
  python3 -c 'import json, sys
for line in reversed(open(sys.argv[1]).read().splitlines()):
    if line.startswith("{"): print(json.loads(line)["ms_per_step"]); break' "$1" 2>/dev/null
}
ratios=()
for r in $(seq 1 "$rounds"); do
  order=(mpt torch); (( r % 2 == 0 )) && order=(torch mpt)
  for system in "${order[@]}"; do
    log="$tmp/$r-$system.log"
    if [[ $system == mpt ]]; then
      node bin/mpt.js bench train --microbatch 8 --steps "$steps" --warmup "$warmup" >"$log" 2>&1
    else
      # warm-up + 1, as `mpt bench train --torch` runs it (the compiled model's first step compiles)
      python3 bench/torch_baseline.py --train compile --microbatch 8 --seq 2048 --steps "$steps" --warmup $((warmup + 1)) >"$log" 2>&1
    fi
  done
  for system in mpt torch; do { echo "== round $r"; cat "$tmp/$r-$system.log"; } >>"$out/ratio-$system.log"; done
  m=$(mpt_ms "$tmp/$r-mpt.log"); t=$(torch_ms "$tmp/$r-torch.log")
  if [[ -z $m || -z $t ]]; then echo "round $r: no median (mpt-ts '$m', torch.compile '$t'): see $out/ratio-*.log"; continue; fi
  ratio=$(python3 -c "print(f'{$t / $m:.4f}')")
  ratios+=("$ratio")
  echo "round $r (${order[0]} first): mpt-ts $m ms, torch.compile $(printf %.1f "$t") ms a step: ${ratio}×"
done
[[ ${#ratios[@]} -gt 0 ]] && python3 -c "import statistics, sys; r = [float(x) for x in sys.argv[1:]]; print(f'ratio over {len(r)} rounds: median {statistics.median(r):.3f}x (each: {\", \".join(f\"{x:.3f}\" for x in r)})')" "${ratios[@]}"
