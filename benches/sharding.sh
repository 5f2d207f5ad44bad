#!/usr/bin/env bash
# What sharding costs: one sweep run whole, then the same sweep as N shards run one after
# another (as a Slurm array on one free node would), then merged; prints both wall times, their
# ratio (target: at most 1.05), and checks the merged records equal the whole sweep's. The
# pretrained models are cached before either is timed (a cluster shares the cache the same way),
# so both measure the attack runs and what a shard repeats: starting, loading the data and the
# cached model, defending the targets its slice touches.
#
#   benches/sharding.sh [SHARDS] [-- sweep arguments]     # default: 4 -- --variant seeds
#
# Uses target/release/specdef (SPECDEF_BIN to override); writes under out/sharding/ and appends
# a JSON line with the adapter, the times and the ratio to out/sharding/sharding.jsonl.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
shards="${1:-4}"
shift || true
[[ "${1:-}" == "--" ]] && shift
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(--variant seeds)
bin="${SPECDEF_BIN:-target/release/specdef}"
[[ -x "$bin" ]] || cargo build --release
out=out/sharding
rm -rf "$out/whole" "$out/shards" "$out/warm"
mkdir -p "$out"
export SPECDEF_CACHE_DIR="${SPECDEF_CACHE_DIR:-$out/cache}"

seconds() { date +%s.%N; }

echo "== warming the pretraining cache: each seed's first run, as a shard of one run (not timed)"
header=$("$bin" sweep "${args[@]}" --out "$out/warm" --shard 0/1000000 2>/dev/null | head -1)
runs=$(sed -n 's/^sweep [^:]*: \([0-9]*\) runs.*/\1/p' <<<"$header")
seeds=$(sed -n 's/.*(\([0-9]*\) seeds.*/\1/p' <<<"$header")
for ((s = 0; s < seeds; s++)); do
    "$bin" sweep "${args[@]}" --out "$out/warm" --shard "$((s * runs / seeds))/$runs" >/dev/null 2>&1
done

echo "== the whole sweep"
start=$(seconds)
"$bin" sweep "${args[@]}" --out "$out/whole" >"$out/whole.log" 2>&1
whole=$(echo "$(seconds) - $start" | bc)

echo "== $shards shards, one after another, then the merge"
start=$(seconds)
for ((i = 0; i < shards; i++)); do
    "$bin" sweep "${args[@]}" --out "$out/shards" --shard "$i/$shards" >"$out/shard-$i.log" 2>&1
done
"$bin" merge "$out/shards" --out "$out/shards/results" >"$out/merge.log" 2>&1
sharded=$(echo "$(seconds) - $start" | bc)

"$bin" compare "$out/whole/results/runs.jsonl" "$out/shards/results/runs.jsonl" >"$out/compare.txt"
ratio=$(echo "scale=4; $sharded / $whole" | bc)
adapter=$(sed -n 's/.* on \(.*\)$/\1/p' "$out/whole.log" | head -1)
printf 'whole %.1f s, %d shards %.1f s: ratio %.3f (target <= 1.05); merged records equal the whole sweep'"'"'s; %s\n' \
    "$whole" "$shards" "$sharded" "$ratio" "$adapter"
printf '{"schema":"specdef.sharding/1","args":"%s","shards":%d,"whole_s":%.2f,"sharded_s":%.2f,"ratio":%.4f,"adapter":"%s","host":"%s"}\n' \
    "${args[*]}" "$shards" "$whole" "$sharded" "$ratio" "$adapter" "$(uname -n)" >>"$out/sharding.jsonl"
