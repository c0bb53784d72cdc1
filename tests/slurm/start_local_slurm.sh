#!/usr/bin/env bash
# A one-node, CPU-only SLURM on this machine, for the tests marked `slurm` (tests/test_grid_slurm.py) and CI.
#
#   tests/slurm/start_local_slurm.sh          # installs (Debian: slurm-wlm, munge) when missing, starts, waits
#   source <(tests/slurm/start_local_slurm.sh --env)   # SLURM_CONF for sbatch/squeue/scontrol in this shell
#   tests/slurm/start_local_slurm.sh --stop   # stops the slurmctld and slurmd it started
#
# Idempotent: a daemon already answering is left as it is. Everything it writes (slurm.conf, state, logs,
# pid files) lies in $IMR_SLURM_DIR (default /tmp/imr-slurm); the daemons talk over 127.0.0.1 on ports
# $IMR_SLURM_PORT and +1 (default 16817, 16818: not SLURM's usual 6817, so a real SLURM on the machine is
# left alone). Needs root (munged, slurmd). The node advertises 4 CPUs (config_overrides) so that two
# 2-task test jobs run side by side on a 2-core machine; no GPUs, no accounting database (job states come from
# squeue/scontrol, which keep finished jobs for MinJobAge=3600 s).
# Exit status: 0 when sinfo answers and the node is idle; 1 otherwise, with the failing command's output.
set -euo pipefail
DIR="${IMR_SLURM_DIR:-/tmp/imr-slurm}"
PORT="${IMR_SLURM_PORT:-16817}"
CONF="$DIR/etc/slurm.conf"
NODE="$(hostname -s)"

if [ "${1:-}" = "--env" ]; then echo "export SLURM_CONF=$CONF"; exit 0; fi
if [ "${1:-}" = "--stop" ]; then
  for daemon in slurmctld slurmd; do
    if [ -f "$DIR/run/$daemon.pid" ]; then kill "$(cat "$DIR/run/$daemon.pid")" 2>/dev/null || true; fi
  done
  exit 0
fi

fail() { echo "start_local_slurm: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (munged and slurmd run as root here)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v sbatch >/dev/null; then
  command -v apt-get >/dev/null || fail "slurmctld/slurmd/munged missing and no apt-get to install slurm-wlm munge"
  for attempt in 1 2 3 4 5 6; do   # another apt may hold the lock for a while
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >"$DIR.apt.log" 2>&1 \
        || { apt-get update -q >>"$DIR.apt.log" 2>&1 && \
             DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >>"$DIR.apt.log" 2>&1; }; then
      break
    fi
    [ "$attempt" = 6 ] && fail "apt-get install slurm-wlm munge failed: $(tail -3 "$DIR.apt.log")"
    sleep 20
  done
fi

# munge: the system's key and daemon (the default socket, which slurm's auth/munge uses)
if ! munge -n >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    (command -v mungekey >/dev/null && mungekey --create --keyfile /etc/munge/munge.key) \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
  fi
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged || fail "munged did not start: $(tail -3 /var/log/munge/munged.log 2>/dev/null)"
  for _ in $(seq 20); do munge -n >/dev/null 2>&1 && break; sleep 0.5; done
  munge -n >/dev/null 2>&1 || fail "munge -n fails after starting munged"
fi

mkdir -p "$DIR/etc" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
cat >"$CONF.tmp" <<CONF_EOF
# Written by tests/slurm/start_local_slurm.sh: one node, CPUs only, 127.0.0.1.
ClusterName=imrlocal
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobRequeue=1
MinJobAge=3600
KillWait=5
InactiveLimit=0
SchedulerParameters=sched_interval=2
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=4 Boards=1 SocketsPerBoard=1 CoresPerSocket=4 ThreadsPerCore=1 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF_EOF
if [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.tmp"; then rm "$CONF.tmp"; else mv "$CONF.tmp" "$CONF"; fi
export SLURM_CONF="$CONF"

alive() { [ -f "$DIR/run/$1.pid" ] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }
alive slurmctld || slurmctld -f "$CONF" || fail "slurmctld did not start: $(tail -5 "$DIR/log/slurmctld.log" 2>/dev/null)"
for _ in $(seq 40); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
scontrol ping 2>/dev/null | grep -q UP || fail "slurmctld does not answer: $(tail -5 "$DIR/log/slurmctld.log")"
alive slurmd || slurmd -f "$CONF" || fail "slurmd did not start: $(tail -5 "$DIR/log/slurmd.log" 2>/dev/null)"
for _ in $(seq 60); do
  state="$(sinfo -h -N -o %t 2>/dev/null | head -1)"
  case "$state" in idle|mix|alloc) break ;; down*|drain*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;; esac
  sleep 0.5
done
case "$state" in idle|mix|alloc) ;; *) fail "node $NODE is '$state': $(tail -5 "$DIR/log/slurmd.log")" ;; esac
echo "start_local_slurm: up (SLURM_CONF=$CONF, node $NODE $state)"
