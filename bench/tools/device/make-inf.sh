#!/usr/bin/env bash
# Builds .device/inf/: what a GPU run needs from this machine, small enough to travel beside the tracked
# tree (the device tool sends at most 64 MiB; the tracked tree is ~19 MB, mostly models/mpt-demo):
#   node.tar.xz     this machine's node binary alone (no npm), xz -9e            ~24 MB
#   node_modules/   the runtime dependencies (koffi with its linux-x64 binary only, fzstd, yaml)
#   fx.tar.xz       the two tiny fixtures, with the bf16 shard's wte payload zeroed (it is the float32
#                   fixture's wte rounded to bf16: restore.py rebuilds it on the device, sha256-checked)
#   setup.sh        sourced there: unpacks node, links node_modules and ../shared
# Usage (from the project root, after npm ci): bench/tools/device/make-inf.sh [OUT_DIR, default .device/inf]
# Then: bench/tools/device/slim-build.sh NAME, and the device `run` tool with carry
# [".device/inf", ".wt-NAME"] and a command starting
#   source .device/inf/setup.sh && export MPT_FIXTURES=/tmp/shared-inf/fixtures && cd .wt-NAME && …
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
here=bench/tools/device
fixtures=${MPT_FIXTURES:-$root/../shared/fixtures}
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
out=${1:-.device/inf}; rm -rf "$out"; mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/node/bin" && cp "$(readlink -f "$(command -v node)")" "$tmp/node/bin/node"
XZ_OPT=-9e tar -C "$tmp/node" -cJf "$out/node.tar.xz" bin

mkdir -p "$out/node_modules/@koromix"
cp -r node_modules/koffi node_modules/fzstd node_modules/yaml "$out/node_modules/"
cp -r node_modules/@koromix/koffi-linux-x64 "$out/node_modules/@koromix/"
# Only what runs on x86-64 glibc Linux: no docs, vendored or native sources, or the musl binary.
rm -rf "$out/node_modules/koffi/doc" "$out/node_modules/koffi/vendor" "$out/node_modules/@koromix/koffi-linux-x64/musl_x64"
find "$out/node_modules/koffi" \( -name "*.cc" -o -name "*.hh" -o -name "*.S" -o -name "*.asm" \) -delete

f="$tmp/fixtures"; mkdir -p "$f/mosaic-gpt-tiny" "$f/mosaic-gpt-tiny-bf16"
cp "$fixtures"/mosaic-gpt-tiny/{config.json,model.safetensors,reference.json,reference_logits.f32,tokenizer.json} "$f/mosaic-gpt-tiny/"
cp "$fixtures"/mosaic-gpt-tiny-bf16/{config.json,reference.json,pytorch_model.bin.index.json,pytorch_model-0000*-of-00002.bin,tokenizer.json} "$f/mosaic-gpt-tiny-bf16/"
python3 "$here/zero-wte.py" "$f"
cp "$here/restore.py" "$f/"
XZ_OPT=-9e tar -C "$tmp" -cJf "$out/fx.tar.xz" fixtures
cp "$here/setup.sh" "$out/"
du -sh "$out"
