#!/usr/bin/env bash
# specdef's CPU engine against JAX (jit, CPU) on identical workloads, in one invocation on one
# machine: exports the workloads, benchmarks specdef, then JAX with its default threading and
# pinned to one thread, and prints one table (also written to out/peers/table.md) and draws the
# cost curves of all of them (out/peers/cost_curves.svg).
#
#   benches/peers/run.sh [--suite peer|standard]
#
# Environment: PYTHON (the interpreter for the venv, default python3); SPECDEF_BIN (a built
# specdef binary to use instead of `cargo build --release`); SPECDEF_PEER_QUICK=1 (JAX side
# only: a smoke test with fewer, shorter samples; its figures are not benchmark figures).
set -euo pipefail

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

suite=peer
while [[ $# -gt 0 ]]; do
    case "$1" in
        --suite) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; suite="$2"; shift 2 ;;
        --suite=*) suite="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
case "$suite" in
    peer|standard) ;;
    *) echo "run.sh: --suite must be peer or standard, not '$suite'" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

# The machine, first.
cpu="$(grep -m1 -i '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
[[ -n "$cpu" ]] || cpu="$(sysctl -n machdep.cpu.brand_string 2>/dev/null || uname -m)"
cores="$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu)"
echo "== machine: $cpu; $cores cores; $(uname -sr)"

# The JAX environment, pinned (reinstalled when requirements.txt changes).
venv="$here/.venv"
py="$venv/bin/python"
req="$here/requirements.txt"
if [[ ! -x "$py" ]]; then
    echo "== creating $venv"
    "${PYTHON:-python3}" -m venv "$venv"
fi
if ! cmp -s "$req" "$venv/.requirements.installed"; then
    echo "== installing $(grep -v '^#' "$req" | tr '\n' ' ')"
    "$py" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$venv/.requirements.installed"
fi

# specdef.
if [[ -n "${SPECDEF_BIN:-}" ]]; then
    specdef="$SPECDEF_BIN"
    echo "== using SPECDEF_BIN=$specdef (not building)"
else
    echo "== cargo build --release"
    cargo build --release
    specdef="${CARGO_TARGET_DIR:-$root/target}/release/specdef"
fi

out="out/peers"
mkdir -p "$out"
rm -rf "$out/export"

echo "== specdef: exporting the $suite suite's workloads to $out/export"
"$specdef" bench --export-peer "$out/export" --suite "$suite"

# The curves suite is the peer suite plus the all-core matmul peak (the plot's ceiling).
bench_suite="$suite"
[[ "$suite" == peer ]] && bench_suite=curves
echo "== specdef: cpu engine ($bench_suite suite)"
"$specdef" bench --engine cpu --suite "$bench_suite" --out "$out/specdef-cpu.jsonl"

echo "== jax: default threading"
"$py" "$here/jax_peer.py" "$out/export" --config default-threads --out "$out/jax-default-threads.jsonl"

echo "== jax: one thread (XLA_FLAGS, taskset -c 0)"
one_thread=(env XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
if command -v taskset >/dev/null 2>&1; then
    one_thread+=(taskset -c 0)
else
    echo "   (no taskset here: XLA_FLAGS only, the process is not pinned to one core)"
fi
"${one_thread[@]}" "$py" "$here/jax_peer.py" "$out/export" --config 1-thread --out "$out/jax-1-thread.jsonl"

echo "== table"
"$py" "$here/table.py" --specdef "$out/specdef-cpu.jsonl" \
    --jax "$out/jax-default-threads.jsonl" "$out/jax-1-thread.jsonl" \
    --markdown "$out/table.md"
echo "== cost curves"
"$specdef" bench-plot "$out/specdef-cpu.jsonl" "$out/jax-default-threads.jsonl" \
    "$out/jax-1-thread.jsonl" --out "$out/cost_curves.svg"
echo "== written: $out/ (specdef-cpu.jsonl, jax-*.jsonl, table.md, cost_curves.svg)"
