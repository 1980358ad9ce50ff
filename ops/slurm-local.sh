#!/usr/bin/env bash
# A real Slurm cluster on this machine, for tests and trying the batch scripts:
# Debian's munge, slurmctld and slurmd, every file under DIR. Either one node (this
# machine) or K emulated nodes (network namespaces of ops/netns-cluster.sh, one
# slurmd each; docs/cluster.md, "Slurm on the emulated nodes").
#
#   ops/slurm-local.sh start DIR [K]  start (or find running) munged, slurmctld and
#                                    slurmd; with K: nodes node0..node<K-1>, one
#                                    slurmd in each, slurmctld on node0
#   ops/slurm-local.sh stop DIR       cancel this cluster's jobs, stop the daemons
#                                    (and remove the emulated nodes)
#   ops/slurm-local.sh env DIR        print the line that points Slurm's commands here
#   ops/slurm-local.sh run DIR cmd... run a command where Slurm's commands reach the
#                                    controller: here for one node, on node0 for K
#
# Then: export SLURM_CONF=DIR/slurm.conf; sbatch ...; squeue (emulated nodes: through
# `run`, as the host has no route to them). Needs root (slurmd starts jobs as any
# user) and the packages munge, slurmctld, slurmd, slurm-client (ops/install-deps.sh).
# DIR's parents must be traversable by the munge user.
# One node: the ports are 16817 (slurmctld) and 16818 (slurmd) unless SLURM_LOCAL_PORT
# is set (slurmctld on it, slurmd on it + 1), so a system Slurm is left alone. K nodes:
# the same ports inside the nodes' own namespaces; NETNS_CLUSTER_ID names the
# namespaces (default 1; the netns state lives in DIR/netns); munged runs on the host
# (its socket is a file, which every namespace reaches).
# AuthInfo cred_expire=10: without it a requeued job waits 120 s before it may run.
set -u

die() { echo "slurm-local: $*" >&2; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start DIR [K] | stop DIR | env DIR | run DIR cmd..."
mkdir -p "$dir" || die "cannot create $dir"
dir="$(cd "$dir" && pwd)"
conf="$dir/slurm.conf"
export SLURM_CONF="$conf"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# emulated nodes: K was given to start (and is kept in DIR/nodes for the other verbs)
nodes="$(cat "$dir/nodes" 2>/dev/null || echo 0)"
netns_source() {   # the id is fixed at start (NETNS_CLUSTER_ID, default 1) and kept
    export NETNS_CLUSTER_STATE="$dir/netns"
    NETNS_CLUSTER_ID="$(cat "$dir/netns-id" 2>/dev/null || echo "${NETNS_CLUSTER_ID:-1}")"
    export NETNS_CLUSTER_ID
    # shellcheck source=ops/netns-cluster.sh
    . "$here/netns-cluster.sh"
}
[ "$nodes" -gt 0 ] && netns_source
# runs a command on node I (emulated) or here
on_node() { local i=$1; shift; if [ "$nodes" -gt 0 ]; then nc_exec "$i" "$@"; else "$@"; fi; }
# starts a daemon on node I: in its network namespace and under its hostname, like
# nc_exec, but keeping the host's /sys (`ip netns exec` mounts a fresh sysfs, without
# /sys/fs/cgroup, and slurmd 22.05 will not start without its cgroup plugin: "error:
# No filesystem mounted on /sys/fs/cgroup ... Unable to initialize cgroup plugin")
node_daemon() {
    local i=$1; shift
    nsenter --net="/run/netns/$(nc_ns "$i")" unshare --uts sh -c 'hostname "$0" && exec "$@"' "node$i" "$@"
}

start_munge() {
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
    if [ "$nodes" -gt 0 ]; then   # a credential made on one node decodes on another
        nc_exec $((nodes - 1)) munge -S "$sock" -n | nc_exec 0 unmunge -S "$sock" >/dev/null \
            || die "munge does not answer on $sock from inside the nodes' namespaces"
    fi
}

write_conf() {   # $1: the SlurmctldHost line's value; node and partition lines follow
    local port="${SLURM_LOCAL_PORT:-16817}" spool="$dir/spool" pid="$dir/slurmd.pid" log="$dir/log/slurmd.log"
    if [ "$nodes" -gt 0 ]; then   # one slurmd per node: its own spool, pid and log (%n: node name)
        spool="$dir/spool/%n" pid="$dir/slurmd-%n.pid" log="$dir/log/slurmd-%n.log"
    fi
    cat >"$conf" <<EOF
# written by ops/slurm-local.sh
ClusterName=ddpmlocal
SlurmctldHost=$1
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$log
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
EOF
}

wait_idle() {   # node names...: until every one is idle (60 s)
    local state="" n
    for _ in $(seq 1 60); do
        state="$(on_node 0 sinfo -h -N -o '%N %T' 2>/dev/null | sort -u | tr '\n' ' ')"
        local all=1
        for n in "$@"; do
            case " $state " in
                *" $n idle "*|*" $n mixed "*|*" $n allocated "*|*" $n completing "*) ;;
                *" $n down"*|*" $n drain"*) all=0; on_node 0 scontrol update nodename="$n" state=resume >/dev/null 2>&1 ;;
                *) all=0 ;;
            esac
        done
        [ $all = 1 ] && return 0
        sleep 1
    done
    die "nodes not idle after 60 s (sinfo: ${state:-no answer}): $(tail -n 3 "$dir"/log/slurmd*.log "$dir/log/slurmctld.log" 2>/dev/null)"
}

start() {
    local k="${1:-}"
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    for b in munged munge unmunge slurmctld slurmd sinfo scontrol; do
        command -v "$b" >/dev/null || die "$b not found: install munge slurmctld slurmd slurm-client (ops/install-deps.sh)"
    done
    id munge >/dev/null 2>&1 || die "no user 'munge' (package munge)"
    chmod 755 "$dir"
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
    if [ -n "$k" ]; then
        [ "$nodes" -eq 0 ] || [ "$nodes" = "$k" ] || die "$dir has $nodes emulated nodes, not $k"
        case "$k" in ''|*[!0-9]*|0) die "K must be a number of nodes, at least 1" ;; esac
        if [ "$nodes" -eq 0 ]; then
            nodes=$k; netns_source
            local rc=0
            nc_up "$k" >"$dir/netns.log" 2>&1 || rc=$?
            # 3: no network namespace here (the caller may skip); anything else fails
            [ $rc -eq 0 ] || { cat "$dir/netns.log" >&2; nodes=0; exit $(( rc == 3 ? 3 : 1 )); }
            echo "$k" >"$dir/nodes"; echo "$NETNS_CLUSTER_ID" >"$dir/netns-id"
        fi
    fi
    start_munge

    if [ "$nodes" -eq 0 ]; then
        local host ncpu mem
        host="$(hostname -s)"
        ncpu="$(nproc)"
        mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
        write_conf "$host(127.0.0.1)"
        cat >>"$conf" <<EOF
NodeName=$host NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
        if ! alive "$dir/slurmctld.pid"; then
            slurmctld || die "slurmctld did not start: $(tail -5 "$dir/log/slurmctld.log" 2>/dev/null)"
        fi
        if ! alive "$dir/slurmd.pid"; then
            slurmd || die "slurmd did not start: $(tail -5 "$dir/log/slurmd.log" 2>/dev/null)"
        fi
        wait_idle "$host"
        echo "slurm-local: cluster up in $dir (node $host: $ncpu CPUs)"
        return
    fi

    # K emulated nodes: CPUs per node from SLURM_LOCAL_NODE_CPUS (default 1), memory
    # split between them; only node names and addresses differ
    local i ncpu="${SLURM_LOCAL_NODE_CPUS:-1}" mem names=()
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 / nodes ))
    write_conf "node0($(nc_ip 0))"
    for ((i = 0; i < nodes; i++)); do
        echo "NodeName=node$i NodeAddr=$(nc_ip $i) CPUs=$ncpu RealMemory=$mem State=UNKNOWN" >>"$conf"
        names+=("node$i")
    done
    echo "PartitionName=debug Nodes=node[0-$((nodes - 1))] Default=YES MaxTime=INFINITE State=UP" >>"$conf"
    if ! alive "$dir/slurmctld.pid"; then
        node_daemon 0 slurmctld || die "slurmctld on node0 did not start: $(tail -5 "$dir/log/slurmctld.log" 2>/dev/null)"
    fi
    for ((i = 0; i < nodes; i++)); do
        mkdir -p "$dir/spool/node$i"
        alive "$dir/slurmd-node$i.pid" && continue
        node_daemon "$i" slurmd || die "slurmd on node$i did not start: $(tail -5 "$dir/log/slurmd-node$i.log" 2>/dev/null)"
    done
    wait_idle "${names[@]}"
    echo "slurm-local: cluster up in $dir ($nodes emulated nodes node0..node$((nodes - 1)) on $(nc_subnet).0/24, $ncpu CPU(s) each; controller on node0)"
}

stop_pids() {   # pid files: SIGTERM, 10 s, then SIGKILL
    local f pids=() p left
    for f in "$@"; do alive "$f" && pids+=("$(cat "$f")"); done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill "${pids[@]}" 2>/dev/null
    for _ in $(seq 1 50); do
        left=""
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left+=" $p"; done
        [ -z "$left" ] && return 0
        sleep 0.2
    done
    for p in $left; do kill -9 "$p" 2>/dev/null; done
}

stop() {
    if [ -f "$conf" ] && alive "$dir/slurmctld.pid"; then
        on_node 0 scancel --quiet --full -u "$(id -un)" 2>/dev/null
        for _ in $(seq 1 40); do
            [ -z "$(on_node 0 squeue -h 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    # the Slurm daemons all at once (each takes a second or two to stop), then munged
    stop_pids "$dir"/slurmd*.pid "$dir/slurmctld.pid"
    stop_pids "$dir/munge/munged.pid"
    # the nodes: whatever still runs there (job steps) is killed with the namespaces
    if [ "$nodes" -gt 0 ]; then nc_down; rm -f "$dir/nodes" "$dir/netns-id"; fi
    echo "slurm-local: stopped the cluster in $dir"
}

case "$cmd" in
    start) start "${3:-}" ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$conf" ;;
    run) shift 2; on_node 0 "$@" ;;
    *) die "unknown command '$cmd' (start, stop, env, run)" ;;
esac
