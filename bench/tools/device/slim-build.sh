#!/usr/bin/env bash
# Usage (from a checkout or worktree of the project): bench/tools/device/slim-build.sh NAME
# Builds it into /<main checkout>/.wt-NAME (git-ignored): compiled JS without maps or declarations,
# package.json, bin/, yamls/, the .cu kernel sources (kernelFolder() finds them through that package.json) and
# bench/*.py, ~2 MB, so that a run carries [".device/inf", ".wt-NAME"] and tests it as it is here.
set -euo pipefail
name=${1:?usage: slim-build.sh NAME}
main=$(cd "$(git rev-parse --git-common-dir)/.." && pwd)
grep -qx '/.wt-\*/' "$main/.git/info/exclude" 2>/dev/null || echo '/.wt-*/' >>"$main/.git/info/exclude"
out=$main/.wt-$name
rm -rf "$out" && mkdir -p "$out/src/backend/cuda" "$out/bench"
npx tsc -p . --outDir "$out/dist" --sourceMap false --declaration false
cp package.json "$out/" && cp -r bin yamls "$out/"
cp -r src/backend/cuda/kernels "$out/src/backend/cuda/"
cp bench/*.py "$out/bench/" 2>/dev/null || true
du -sh "$out"
