#!/usr/bin/env bash
# Builds the browser app: the library for wasm32, wasm-bindgen's JS glue, and web/index.html,
# into web/dist (or $SPECDEF_WEB_OUT). Needs wasm-bindgen-cli of exactly the version in Cargo.lock.
# Where they are, it also copies the transformer demo's files into web/dist/transformer/: the
# released classifier ($SPECDEF_RELEASED, default cache/transformer/released.safetensors, made by
# `specdef release-transformer`), the encoder's tokenizer.json and WordNet's data.noun
# (scripts/fetch-transformer.sh; $SPECDEF_TRANSFORMER_DIR as for specdef).
set -euo pipefail
cd "$(dirname "$0")/.."

want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
  echo "web/build.sh: needs wasm-bindgen-cli $want (found: ${have:-none})." >&2
  echo "  install it with: cargo install wasm-bindgen-cli --version $want" >&2
  exit 1
fi

out="${SPECDEF_WEB_OUT:-web/dist}"
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --release --lib --target wasm32-unknown-unknown
rm -rf "$out"
mkdir -p "$out"
# The name section (function names for stack traces, 1.2 MB) is dropped to keep the module small.
wasm-bindgen --target web --no-typescript --remove-name-section --out-dir "$out" \
  "$target_dir/wasm32-unknown-unknown/release/specdef.wasm"
cp web/index.html "$out/"

cache="${SPECDEF_TRANSFORMER_DIR:-cache/transformer}"
released="${SPECDEF_RELEASED:-$cache/released.safetensors}"
if [ -n "${SPECDEF_RELEASED:-}" ] && [ ! -f "$released" ]; then
  echo "web/build.sh: SPECDEF_RELEASED=$released is not a file" >&2
  exit 1
fi
demo_files=("$released" "$cache/all-MiniLM-L6-v2/tokenizer.json" "$cache/wordnet/data.noun")
if ls "${demo_files[@]}" >/dev/null 2>&1; then
  mkdir -p "$out/transformer"
  cp "$released" "$out/transformer/released.safetensors"
  cp "${demo_files[@]:1}" "$out/transformer/"
  echo "web/build.sh: the transformer demo's files are in $out/transformer/"
else
  echo "web/build.sh: no transformer demo (it needs $released, from \`specdef release-transformer" \
    "--variant transformer-quick --out $released\`, and scripts/fetch-transformer.sh's files)"
fi
echo "web/build.sh: built $out ($(du -k "$out/specdef_bg.wasm" | cut -f1) KiB of WebAssembly)"
