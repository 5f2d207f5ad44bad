#!/usr/bin/env bash
# What sharding costs: one sweep run whole, then the same sweep as N shards run one after
# another (as a Slurm array on one free node would), then merged; prints both wall times, their
# ratio (target: at most 1.05) and the time each spent outside the attack runs, and checks the
# merged records equal the whole sweep's (specdef compare fails the script otherwise). The
# pretrained models are cached before either is timed (a cluster shares the cache the same way),
# so both measure the attack runs and what a shard repeats: starting, loading the data and the
# cached model, defending the targets its slice touches.
#
#   benches/sharding.sh [SHARDS] [-- sweep arguments]     # default: 4 -- --variant seeds
#
# Uses target/release/specdef (SPECDEF_BIN to override); writes under out/sharding/ and appends
# a JSON line per round with the adapter, the times and the ratio to out/sharding/sharding.jsonl
# (SHARDING_ROUNDS rounds, default 2).
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
header=$("$bin" sweep "${args[@]}" --out "$out/warm" --shard 0/1000000 2>/dev/null | sed -n 1p)
runs=$(sed -n 's/^sweep [^:]*: \([0-9]*\) runs.*/\1/p' <<<"$header")
seeds=$(sed -n 's/.*(\([0-9]*\) seeds.*/\1/p' <<<"$header")
for ((s = 0; s < seeds; s++)); do
    "$bin" sweep "${args[@]}" --out "$out/warm" --shard "$((s * runs / seeds))/$runs" >/dev/null 2>&1
done

# Seconds of attack runs in a result folder: the sum of its records' wall_ms (runs.csv's last
# column). Wall time minus this is what happens outside the runs: starting, loading, defending.
run_seconds() { awk -F, 'NR > 1 { s += $NF } END { printf "%.2f", s / 1000 }' "$1/runs.csv"; }

whole_sweep() {
    rm -rf "$out/whole"
    local start; start=$(seconds)
    "$bin" sweep "${args[@]}" --out "$out/whole" >"$out/whole.log" 2>&1
    whole=$(echo "$(seconds) - $start" | bc)
    whole_runs=$(run_seconds "$out/whole/results")
}

sharded_sweep() {
    rm -rf "$out/shards"
    local start; start=$(seconds)
    for ((i = 0; i < shards; i++)); do
        "$bin" sweep "${args[@]}" --out "$out/shards" --shard "$i/$shards" >"$out/shard-$i.log" 2>&1
    done
    "$bin" merge "$out/shards" --out "$out/shards/results" >"$out/merge.log" 2>&1
    sharded=$(echo "$(seconds) - $start" | bc)
    sharded_runs=$(run_seconds "$out/shards/results")
}

# The machine's speed drifts over minutes (a shared host), so the two alternate, the order
# swapped each round, and each round's time outside the runs is reported beside the wall times.
rounds="${SHARDING_ROUNDS:-2}"
adapter=""
for ((round = 1; round <= rounds; round++)); do
    echo "== round $round: the whole sweep and $shards shards one after another (then the merge)"
    if ((round % 2)); then whole_sweep; sharded_sweep; else sharded_sweep; whole_sweep; fi
    "$bin" compare "$out/whole/results/runs.jsonl" "$out/shards/results/runs.jsonl" >"$out/compare.txt"
    ratio=$(echo "scale=4; $sharded / $whole" | bc)
    outside_whole=$(echo "$whole - $whole_runs" | bc)
    outside_sharded=$(echo "$sharded - $sharded_runs" | bc)
    adapter=$(sed -n 's/^sweep .* runs on \(.*\)$/\1/p' "$out/whole.log" | sed -n 1p)
    printf 'round %d: whole %.1f s (%.1f s outside the runs), %d shards %.1f s (%.1f s outside the runs): ratio %.3f; merged records equal the whole sweep'"'"'s\n' \
        "$round" "$whole" "$outside_whole" "$shards" "$sharded" "$outside_sharded" "$ratio"
    printf '{"schema":"specdef.sharding/1","args":"%s","round":%d,"shards":%d,"whole_s":%.2f,"whole_outside_runs_s":%.2f,"sharded_s":%.2f,"sharded_outside_runs_s":%.2f,"ratio":%.4f,"adapter":"%s","host":"%s"}\n' \
        "${args[*]}" "$round" "$shards" "$whole" "$outside_whole" "$sharded" "$outside_sharded" "$ratio" "$adapter" "$(uname -n)" >>"$out/sharding.jsonl"
done
echo "on $adapter (target: ratio <= 1.05); records in $out/sharding.jsonl"
