#!/usr/bin/env bash
# A one-node Slurm on this machine, for tests and for trying the sweep scripts out.
#
#   deploy/slurm/local-cluster.sh start    configure and start munged, slurmctld and slurmd
#   deploy/slurm/local-cluster.sh status   sinfo and squeue of the local cluster
#   deploy/slurm/local-cluster.sh stop     cancel its jobs and stop the daemons it started
#
# Then `source "$SPECDEF_SLURM_DIR/env.sh"` (it sets SLURM_CONF) and use sbatch, squeue, sinfo or
# deploy/slurm/submit.sh as on a real cluster.
#
# Everything it writes goes into $SPECDEF_SLURM_DIR (default /tmp/specdef-slurm): the config, its
# own munge key and munged socket, the controller state, the spool, the logs and the pid files. It
# runs its own munged on a socket in that folder (slurm.conf's AuthInfo=socket=... points Slurm's
# daemons and commands at it), so it needs no system munged, no /run/munge and no systemd, and it
# never touches a munged or Slurm that the machine already runs, as long as the ports differ
# (SPECDEF_SLURMCTLD_PORT, default 6817, and SPECDEF_SLURMD_PORT, default 6818).
# It needs root (Slurm's daemons run as SlurmUser=root here) and Debian's slurm-wlm and munge:
#   apt-get install slurm-wlm munge
set -euo pipefail

DIR="${SPECDEF_SLURM_DIR:-/tmp/specdef-slurm}"
CTLD_PORT="${SPECDEF_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${SPECDEF_SLURMD_PORT:-6818}"
# Seconds to wait for the node to show up idle (and for daemons to exit on stop).
TIMEOUT="${SPECDEF_SLURM_TIMEOUT:-60}"

CONF="$DIR/slurm.conf"
MUNGE_DIR="$DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
RUN_DIR="$DIR/run"
LOG_DIR="$DIR/log"

die() {
  echo "local-cluster: error: $*" >&2
  exit 1
}
say() { echo "local-cluster: $*"; }

# The daemons and commands this needs, with the package that brings each.
need_tools() {
  local missing=() tool
  for tool in munged munge unmunge; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool (package munge)")
  done
  for tool in slurmctld slurmd; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool (package slurm-wlm)")
  done
  for tool in sinfo squeue scontrol scancel sbatch; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool (package slurm-client, from slurm-wlm)")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    printf 'local-cluster: error: not installed: %s\n' "${missing[@]}" >&2
    die "install them with: apt-get install slurm-wlm munge"
  fi
  # slurmctld and slurmd run as root here and switch to the job's user; without root they cannot.
  [ "$(id -u)" = 0 ] || die "must run as root (the daemons run as SlurmUser=root)"
}

# PATH is searched for the daemons but Debian puts them in /usr/sbin, not on every root PATH.
PATH="$PATH:/usr/sbin:/sbin"

pid_of() { # the pid in a pid file, if that process is alive and still the named daemon
  local file="$RUN_DIR/$1.pid" pid
  [ -s "$file" ] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # A stale pid file's number may belong to another process by now: never signal that one.
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
  # A killed daemon can linger as a zombie where PID 1 does not reap (containers): it is gone.
  case "$(ps -o stat= -p "$pid" 2>/dev/null)" in Z*) return 1 ;; esac
  echo "$pid"
}

log_tails() {
  local f
  for f in "$LOG_DIR"/*.log "$LOG_DIR"/*.out; do
    [ -s "$f" ] || continue
    echo "----- last lines of $f -----" >&2
    tail -n 25 "$f" >&2
  done
}

write_config() {
  local host cpus mem
  # slurmctld only runs where SlurmctldHost names this host (hostname -s); the address is pinned
  # to loopback so a hostname that does not resolve (containers) does not matter.
  host=$(hostname -s)
  # nproc, not the socket/core count: it honours CPU affinity limits, and a node configured with
  # more CPUs than it reports is drained ("Low socket*core*thread count").
  cpus=$(nproc)
  # RealMemory must not exceed what slurmd measures (else "Low RealMemory" drains the node), so
  # take slurmd's own figure, falling back to /proc/meminfo.
  mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
  [ -n "$mem" ] || mem=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)

  mkdir -p "$DIR" "$MUNGE_DIR" "$RUN_DIR" "$LOG_DIR" "$DIR/state" "$DIR/spool"
  chmod 0755 "$DIR"
  # munged refuses a key or socket folder that others can write to; 0711 lets non-root
  # users reach the socket (to submit jobs) without listing the key.
  chmod 0711 "$MUNGE_DIR"

  cat >"$CONF" <<EOF
# Written by deploy/slurm/local-cluster.sh: a one-node Slurm on this machine, for tests.
ClusterName=specdef-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
# Its own munged (see local-cluster.sh), for the daemons and the commands alike.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
# No cgroups in a container: track processes by /proc and bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Schedule at once: by default pending work waits for the next 3 s scheduling pass, which is most
# of a short test's time.
SchedulerParameters=batch_sched_delay=0
# A node that restarts (slurmd stop/start) comes back without an admin's "scontrol update".
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$DIR/plugstack.conf
# No mail on this test cluster (the default mail program is absent; slurmctld logs an error).
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  # An empty SPANK config: the machine's /etc/slurm/plugstack.conf is none of this cluster's business.
  : >"$DIR/plugstack.conf"

  cat >"$DIR/env.sh" <<EOF
# Source this to use the local cluster's sinfo, squeue, sbatch: . $DIR/env.sh
export SLURM_CONF=$CONF
export SPECDEF_SLURM_DIR=$DIR
EOF
}

start_munged() {
  if pid_of munged >/dev/null; then
    return 0
  fi
  # Our own key, made once (dd where an older munge has no mungekey); the system's
  # /etc/munge/munge.key is left alone.
  if [ ! -s "$MUNGE_DIR/munge.key" ]; then
    (
      umask 077
      mungekey --create --keyfile="$MUNGE_DIR/munge.key" 2>/dev/null ||
        dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
    )
  fi
  chmod 0600 "$MUNGE_DIR/munge.key"
  # --force: munged would otherwise refuse to run as root or over a stale socket.
  munged --force \
    --key-file="$MUNGE_DIR/munge.key" \
    --socket="$MUNGE_SOCKET" \
    --pid-file="$RUN_DIR/munged.pid" \
    --log-file="$LOG_DIR/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed" \
    >"$LOG_DIR/munged.out" 2>&1 || {
    log_tails
    die "munged did not start"
  }
  # A round trip through the new socket proves the key and socket work before Slurm relies on them.
  local i
  for ((i = 0; i < 50; i++)); do
    if munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  log_tails
  die "munged runs but a munge/unmunge round trip on $MUNGE_SOCKET fails"
}

start_daemon() { # slurmctld or slurmd, in daemon mode (they fork and write their pid file)
  local name="$1"
  shift
  if pid_of "$name" >/dev/null; then
    return 0
  fi
  rm -f "$RUN_DIR/$name.pid"
  SLURM_CONF="$CONF" "$name" -f "$CONF" "$@" >"$LOG_DIR/$name.out" 2>&1 || {
    log_tails
    die "$name did not start"
  }
  local i
  for ((i = 0; i < 100; i++)); do
    pid_of "$name" >/dev/null && return 0
    sleep 0.1
  done
  log_tails
  die "$name wrote no pid file ($RUN_DIR/$name.pid); it probably exited"
}

node_state() {
  SLURM_CONF="$CONF" sinfo -h -N -o '%T' 2>/dev/null | head -n1
}

cmd_start() {
  need_tools
  local t0=$SECONDS
  if pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null && pid_of munged >/dev/null; then
    say "already running (state in $DIR)"
  else
    # Another Slurm on these ports would make ours die at once with "Address already in use".
    local port
    for port in "$CTLD_PORT" "$SLURMD_PORT"; do
      if { pid_of slurmctld || pid_of slurmd; } >/dev/null; then break; fi
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is in use (another Slurm?): stop it, or set SPECDEF_SLURMCTLD_PORT and SPECDEF_SLURMD_PORT"
      fi
    done
    write_config
    start_munged
    # -c on slurmctld would wipe saved jobs; a plain start recovers them, which is what a restart wants.
    start_daemon slurmctld
    # -N: the node name, in case this host's name is set differently from what slurmd derives.
    start_daemon slurmd -N "$(hostname -s)"
  fi

  # The node is "unknown" until slurmd registers, then idle (or mixed/allocated with jobs).
  local state=""
  while ((SECONDS - t0 < TIMEOUT)); do
    state=$(node_state || true)
    case "$state" in
      idle | mixed | allocated | completing)
        say "up in $((SECONDS - t0)) s: node $(hostname -s) is $state (state in $DIR)"
        say "use it with: source $DIR/env.sh"
        return 0
        ;;
      *drain* | *down* | *fail*)
        # A node left drained or down by an earlier run (e.g. killed mid-job): resume it.
        SLURM_CONF="$CONF" scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        ;;
    esac
    sleep 0.5
  done
  echo "local-cluster: error: the node is not idle after $TIMEOUT s (state: '${state:-no answer}')" >&2
  SLURM_CONF="$CONF" sinfo -N -l >&2 || true
  SLURM_CONF="$CONF" scontrol show node >&2 || true
  log_tails
  exit 1
}

stop_pid() { # stop one process: TERM, then KILL after GRACE seconds (default TIMEOUT)
  local what="$1" pid="$2" grace="${3:-$TIMEOUT}" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || {
      say "stopped $what (pid $pid)"
      return 0
    }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  say "killed $what (pid $pid) after $grace s"
}

writes_slurmd_log() { # whether a process holds this cluster's slurmd log open
  local fd
  for fd in "/proc/$1/fd/"*; do
    [ "$(readlink "$fd" 2>/dev/null)" = "$LOG_DIR/slurmd.log" ] && return 0
  done
  return 1
}

descendants() { # the pids of a process's children, grandchildren, ...
  local kid
  for kid in $(ps -eo pid=,ppid= | awk -v p="$1" '$2 == p { print $1 }'); do
    echo "$kid"
    descendants "$kid"
  done
}

cmd_stop() {
  local pid name
  # Cancel the cluster's jobs first: slurmd's exit leaves running job steps behind.
  if pid_of slurmctld >/dev/null && [ -f "$CONF" ]; then
    local jobs
    jobs=$(SLURM_CONF="$CONF" squeue -h -o '%A' 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086 # one job id per word
      SLURM_CONF="$CONF" scancel $jobs 2>/dev/null || true
      local i
      for ((i = 0; i < TIMEOUT * 2; i++)); do
        [ -n "$(SLURM_CONF="$CONF" squeue -h -o '%A' 2>/dev/null || true)" ] || break
        sleep 0.5
      done
    fi
  fi
  for name in slurmd slurmctld munged; do
    if pid=$(pid_of "$name"); then
      stop_pid "$name" "$pid"
    fi
    rm -f "$RUN_DIR/$name.pid"
  done
  # Job steps that outlived slurmd (it was killed, or slurmctld was not there to cancel them):
  # ours are the slurmstepd processes writing to this cluster's slurmd log. Their job processes
  # go first, then the step.
  local stepd kid
  for stepd in $(ps -eo pid=,comm= | awk '$2 == "slurmstepd" { print $1 }'); do
    if writes_slurmd_log "$stepd"; then
      for kid in $(descendants "$stepd"); do
        stop_pid "job process" "$kid" 5
      done
      # slurmstepd ignores SIGTERM.
      stop_pid slurmstepd "$stepd" 1
    fi
  done
  say "stopped (state kept in $DIR; remove it for a fresh cluster)"
}

cmd_status() {
  local name pid
  for name in munged slurmctld slurmd; do
    if pid=$(pid_of "$name"); then
      say "$name running (pid $pid)"
    else
      say "$name not running"
    fi
  done
  [ -f "$CONF" ] || die "no config in $DIR: run '$0 start' first"
  pid_of slurmctld >/dev/null || die "slurmctld is not running: run '$0 start'"
  SLURM_CONF="$CONF" sinfo
  SLURM_CONF="$CONF" squeue
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 start|stop|status   (state in \$SPECDEF_SLURM_DIR, now $DIR)" >&2
    exit 2
    ;;
esac
