#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests and trying the batch
# scripts: Debian's munge, slurmctld and slurmd, every file under DIR.
#
#   ops/slurm-local.sh start DIR   start (or find running) munged, slurmctld, slurmd
#   ops/slurm-local.sh stop DIR    cancel this cluster's jobs, stop the daemons
#   ops/slurm-local.sh env DIR     print the line that points Slurm's commands here
#
# Then: export SLURM_CONF=DIR/slurm.conf; sbatch ...; squeue. Needs root (slurmd
# starts jobs as any user) and the packages munge, slurmctld, slurmd, slurm-client
# (ops/install-deps.sh). DIR's parents must be traversable by the munge user.
# The ports are 16817 (slurmctld) and 16818 (slurmd) unless SLURM_LOCAL_PORT is
# set (slurmctld on it, slurmd on it + 1), so a system Slurm is left alone.
# AuthInfo cred_expire=10: without it a requeued job waits 120 s before it may run.
set -u

die() { echo "slurm-local: $*" >&2; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start|stop|env DIR"
mkdir -p "$dir" || die "cannot create $dir"
dir="$(cd "$dir" && pwd)"
conf="$dir/slurm.conf"
export SLURM_CONF="$conf"

start() {
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    for b in munged munge unmunge slurmctld slurmd sinfo scontrol; do
        command -v "$b" >/dev/null || die "$b not found: install munge slurmctld slurmd slurm-client (ops/install-deps.sh)"
    done
    id munge >/dev/null 2>&1 || die "no user 'munge' (package munge)"
    chmod 755 "$dir"
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
    chown munge: "$dir/munge"; chmod 755 "$dir/munge"   # munged wants the socket dir open to all
    local sock="$dir/munge/munge.socket"
    if ! alive "$dir/munge/munged.pid"; then
        if [ ! -s "$dir/munge/munge.key" ]; then
            head -c 1024 /dev/urandom >"$dir/munge/munge.key"
            chown munge: "$dir/munge/munge.key"; chmod 400 "$dir/munge/munge.key"
        fi
        runuser -u munge -- munged --socket="$sock" --key-file="$dir/munge/munge.key" \
            --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
            --seed-file="$dir/munge/munged.seed" \
            || die "munged did not start: $(tail -3 "$dir/munge/munged.log" 2>/dev/null)"
    fi
    munge -S "$sock" -n | unmunge -S "$sock" >/dev/null || die "munge does not answer on $sock"

    local host ncpu mem port
    host="$(hostname -s)"
    ncpu="$(nproc)"
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
    port="${SLURM_LOCAL_PORT:-16817}"
    cat >"$conf" <<EOF
# written by ops/slurm-local.sh
ClusterName=ddpmlocal
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobRequeue=1
# schedule pending (requeued) jobs within a second or two, not at the 60 s default pass
SchedulerParameters=sched_interval=1,bf_interval=1
KillWait=30
MinJobAge=3600
InactiveLimit=0
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    if ! alive "$dir/slurmctld.pid"; then
        slurmctld || die "slurmctld did not start: $(tail -5 "$dir/log/slurmctld.log" 2>/dev/null)"
    fi
    if ! alive "$dir/slurmd.pid"; then
        slurmd || die "slurmd did not start: $(tail -5 "$dir/log/slurmd.log" 2>/dev/null)"
    fi
    local state=""
    for _ in $(seq 1 60); do
        state="$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1)"
        case "$state" in idle|mixed|allocated|completing) break ;; esac
        case "$state" in down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 ;; esac
        sleep 1
    done
    case "$state" in
        idle|mixed|allocated|completing) echo "slurm-local: cluster up in $dir (node $host: $state, $ncpu CPUs)" ;;
        *) die "node $host is '$state' after 60 s: $(tail -3 "$dir/log/slurmd.log" "$dir/log/slurmctld.log" 2>/dev/null)" ;;
    esac
}

stop() {
    if [ -f "$conf" ] && alive "$dir/slurmctld.pid"; then
        scancel --quiet --full -u "$(id -un)" 2>/dev/null
        for _ in $(seq 1 40); do
            [ -z "$(squeue -h 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    local f pid
    for f in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
        alive "$f" || continue
        pid="$(cat "$f")"
        kill "$pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    done
    echo "slurm-local: stopped the cluster in $dir"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$conf" ;;
    *) die "unknown command '$cmd' (start, stop, env)" ;;
esac
