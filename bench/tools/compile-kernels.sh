#!/usr/bin/env bash
# Compile every CUDA kernel source (src/backend/cuda/kernels/*.cu) for sm_90a with nvcc, on a machine
# without a GPU, the way kernels.ts hands them to NVRTC (its kernelSource): syntax errors, registers
# and spills before any device time is spent. Usage: bench/tools/compile-kernels.sh [-DNAME[=V] ...]
# (defaults: -DMPT_BF16 -DHEAD_DIM=128 -DROW_TILES=1 -DUNROLL=4; extra defines are added to them).
# The source comes from dist/ (run `npx tsc -p .` first), and nvcc gets no include path for the
# kernel folder, as NVRTC gets none.
# Exit status 1 if any file fails to compile.
set -uo pipefail
dir=$(cd "$(dirname "$0")/../../src/backend/cuda/kernels" && pwd)
command -v nvcc >/dev/null || { echo "compile-kernels: nvcc not found (the CUDA toolkit's compiler; no GPU needed)" >&2; exit 2; }
root=$(cd "$(dirname "$0")/../.." && pwd)
[ -f "$root/dist/src/backend/cuda/kernels.js" ] || { echo "compile-kernels: build first (npx tsc -p .): dist/src/backend/cuda/kernels.js is missing" >&2; exit 2; }
tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
failed=0
for path in "$dir"/*.cu; do
  file=$(basename "$path")
  node --input-type=module -e "import { kernelSource } from '$root/dist/src/backend/cuda/kernels.js';
    process.stdout.write(kernelSource('$file', '$dir'));" >"$tmp/$file"
  if log=$(nvcc -arch=sm_90a -cubin --std=c++17 -DMPT_BF16 -DHEAD_DIM=128 -DROW_TILES=1 -DUNROLL=4 "$@" -Xptxas -v -o "$tmp/out.cubin" "$tmp/$file" 2>&1); then
    regs=$(grep -o 'Used [0-9]* registers' <<<"$log" | awk '{print $2}' | sort -n | tail -1)
    spills=$(grep -o '[0-9]* bytes spill stores' <<<"$log" | awk '{s += $1} END {print s + 0}')
    printf '%-24s ok   max %s registers a thread, %s bytes of spill stores\n' "$file" "${regs:-?}" "$spills"
  else
    failed=1
    printf '%-24s FAILED\n' "$file"
    grep -E 'error|warning' <<<"$log" | head -5 | sed 's/^/    /'
  fi
done
exit $failed
