#!/usr/bin/env bash
# Submits a specdef sweep as a Slurm job array of SHARDS tasks (sweep.sbatch), and the merge of
# their shard folders (merge.sbatch) as a job that runs only after every task succeeded.
#
#   deploy/slurm/submit.sh SCENARIO OUT SHARDS [--wait]
#
# SCENARIO  the scenario file, or - for specdef's built-in default scenario
# OUT       the output folder (created; must be on storage every node sees): shard folders in
#           OUT/shard-I-of-N/, Slurm's logs in OUT/slurm-logs/, the merged results in OUT/results/
# SHARDS    the number of array tasks (shards)
# --wait    wait for the merge job to end; exit 0 only if it completed (a failed shard cancels
#           the merge, and then this exits non-zero)
#
# Prints the array job id and the merge job id. Resubmitting with the same OUT and SHARDS resumes:
# runs already recorded in the shard folders are not run again.
#
# Environment, passed to the jobs (sbatch --export=ALL):
#   SPECDEF_BIN               the specdef binary (default: specdef on PATH); a relative path is
#                             made absolute here
#   SPECDEF_CACHE_DIR         the pretrained model cache: shared storage, so shards pretrain once
#   SPECDEF_SWEEP_ARGS        more arguments for specdef sweep, e.g. "--quick --engine cpu"
# and, for submit.sh itself:
#   SPECDEF_SBATCH_ARGS       more sbatch options for both jobs, e.g. "--partition=long --time=12:00:00"
#   SPECDEF_SWEEP_SBATCH_ARGS more sbatch options for the array only, e.g. "--gres=gpu:1"
#   SPECDEF_ARRAY_LIMIT       at most this many tasks running at once (sbatch --array=...%N)
#   SLURM_CONF                which cluster (deploy/slurm/local-cluster.sh's env.sh sets it)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
  echo "usage: $0 SCENARIO OUT SHARDS [--wait]   (SCENARIO - for the built-in default)" >&2
  exit 2
}

wait_for_merge=0
pos=()
for arg in "$@"; do
  case "$arg" in
    --wait) wait_for_merge=1 ;;
    -h | --help) usage ;;
    *) pos+=("$arg") ;;
  esac
done
[ "${#pos[@]}" = 3 ] || usage
scenario="${pos[0]}"
out="${pos[1]}"
shards="${pos[2]}"

[[ "$shards" =~ ^[1-9][0-9]*$ ]] || {
  echo "submit: SHARDS must be a positive integer, not '$shards'" >&2
  exit 2
}
command -v sbatch >/dev/null || {
  echo "submit: sbatch not found (install slurm-client, or run on the cluster's login node)" >&2
  exit 1
}

# Absolute paths: the jobs may start in another folder on another node.
if [ "$scenario" = - ]; then
  scenario=""
else
  [ -f "$scenario" ] || {
    echo "submit: no scenario file '$scenario'" >&2
    exit 1
  }
  scenario=$(realpath "$scenario")
fi
mkdir -p "$out/slurm-logs"
out=$(realpath "$out")
bin="${SPECDEF_BIN:-specdef}"
if [[ "$bin" == */* ]]; then
  bin=$(realpath -m "$bin")
  [ -x "$bin" ] || echo "submit: warning: SPECDEF_BIN $bin is not an executable here" >&2
elif ! command -v "$bin" >/dev/null; then
  echo "submit: warning: $bin is not on PATH here (set SPECDEF_BIN to the binary's path)" >&2
fi
[ -n "${SPECDEF_CACHE_DIR:-}" ] ||
  echo "submit: note: SPECDEF_CACHE_DIR is unset: each node uses its ~/.cache/specdef" >&2

export SPECDEF_SCENARIO="$scenario" SPECDEF_OUT="$out" SPECDEF_BIN="$bin"

# Extra sbatch options are lists of words, split on spaces on purpose.
# shellcheck disable=SC2206
common=(--export=ALL ${SPECDEF_SBATCH_ARGS:-})
# shellcheck disable=SC2206
sweep_extra=(${SPECDEF_SWEEP_SBATCH_ARGS:-})

range="0-$((shards - 1))${SPECDEF_ARRAY_LIMIT:+%$SPECDEF_ARRAY_LIMIT}"
# --parsable prints "jobid" or "jobid;cluster".
array_id=$(sbatch --parsable "${common[@]}" "${sweep_extra[@]}" \
  --array="$range" \
  --output="$out/slurm-logs/sweep-%A_%a.out" \
  "$here/sweep.sbatch")
array_id="${array_id%%;*}"
echo "array job: $array_id (tasks $range, logs $out/slurm-logs/sweep-${array_id}_I.out)"

# afterok on an array job waits for all its tasks; --kill-on-invalid-dep cancels the merge when a
# task fails, instead of leaving it pending forever (and sbatch --wait with it).
merge_args=("${common[@]}"
  --dependency="afterok:$array_id" --kill-on-invalid-dep=yes
  --output="$out/slurm-logs/merge-%j.out"
  "$here/merge.sbatch")

if [ "$wait_for_merge" = 0 ]; then
  merge_id=$(sbatch --parsable "${merge_args[@]}")
  merge_id="${merge_id%%;*}"
  echo "merge job: $merge_id (runs after every task succeeded; results in $out/results)"
  exit 0
fi

# sbatch --wait prints the id at once and returns when the job ends; it runs in the background
# so the id can be shown while waiting.
id_file=$(mktemp)
trap 'rm -f "$id_file"' EXIT
sbatch --parsable --wait "${merge_args[@]}" >"$id_file" &
sbatch_pid=$!
merge_id=""
while [ -z "$merge_id" ] && kill -0 "$sbatch_pid" 2>/dev/null; do
  sleep 0.2
  merge_id=$(head -n1 "$id_file" | cut -d';' -f1)
done
[ -n "$merge_id" ] || merge_id=$(head -n1 "$id_file" | cut -d';' -f1)
echo "merge job: $merge_id (waiting for it; results in $out/results)"
rc=0
wait "$sbatch_pid" || rc=$?
[ -n "$merge_id" ] || {
  echo "submit: the merge job was not submitted (sbatch exit $rc)" >&2
  exit "$((rc == 0 ? 1 : rc))"
}

# sbatch --wait exits 0 for a job cancelled before it ran (the failed-array case), so the job's
# final state decides. The record stays in slurmctld for MinJobAge (300 s by default).
state=$(scontrol -o show job "$merge_id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)
if [ "$state" = COMPLETED ] && [ "$rc" = 0 ]; then
  echo "merge job $merge_id completed: results in $out/results"
  exit 0
fi
echo "submit: merge job $merge_id ended ${state:-in an unknown state} (sbatch exit $rc)" >&2
# Which shards failed, with their logs (unknown if slurmctld no longer holds the records).
scontrol -o show job "$array_id" 2>/dev/null |
  awk -v prefix="$out/slurm-logs/sweep-${array_id}_" '{
    task = ""; st = ""; code = ""
    for (i = 1; i <= NF; i++) {
      if ($i ~ /^ArrayTaskId=/) task = substr($i, 13)
      else if ($i ~ /^JobState=/) st = substr($i, 10)
      else if ($i ~ /^ExitCode=/) code = substr($i, 10)
    }
    if (st != "COMPLETED") printf "  task %s: %s (exit %s), log %s%s.out\n", task, st, code, prefix, task
  }' >&2 || true
if [ -f "$out/slurm-logs/merge-$merge_id.out" ]; then
  echo "  merge log: $out/slurm-logs/merge-$merge_id.out" >&2
fi
exit "$((rc == 0 ? 1 : rc))"
