#!/usr/bin/env bash
# An emulated multi-node cluster on one machine, for running ddpm-train across
# "nodes" that talk over TCP only (docs/cluster.md). Each node is a network
# namespace with its own hostname (a UTS namespace entered for every command run
# on it), linked by a veth pair to a bridge that lives in a namespace of its own
# (the "switch"): nothing is added to the host's namespace, no address is routed
# anywhere else, and traffic can only flow between the namespaces made here. Each
# link is shaped in both directions by tc (netem delay + rate where the kernel has
# sch_netem, else tbf rate only, and `up` says so).
#
#   ops/netns-cluster.sh up K          make nodes 0..K-1 (prints the state folder)
#   ops/netns-cluster.sh exec I cmd... run cmd on node I (its namespace and hostname)
#   ops/netns-cluster.sh mpirun args.. mpirun on node 0, ranks placed one per node in
#                                      order (rank i on node i), TCP only, started on
#                                      the other nodes by ops/netns-agent.sh
#   ops/netns-cluster.sh link I up|down          take node I's link down / up
#   ops/netns-cluster.sh shape I RATE [DELAY]    reshape node I's link (RATE: tc rate
#                                                like 1gbit, 2mbit; DELAY like 0.2ms)
#   ops/netns-cluster.sh pids [I]      processes running on node I (default: all nodes)
#   ops/netns-cluster.sh kill          SIGKILL every process on the nodes
#   ops/netns-cluster.sh down          kill what runs there, remove everything
#   ops/netns-cluster.sh info          nodes, addresses, shaping
#
# Settings (environment): NETNS_CLUSTER_ID (default 1 from the command line, the
# sourcing shell's PID when sourced; names the
# namespaces ddpmc<ID>-n<I> and ddpmc<ID>-sw, at most 6 characters),
# NETNS_CLUSTER_RATE (default 1gbit), NETNS_CLUSTER_DELAY (one-way, default 0.2ms),
# NETNS_CLUSTER_STATE (state folder, default /tmp/ddpm-netns-<ID>).
# A sourcing script can call nc_up / nc_down / nc_exec / nc_mpirun ... directly
# (tests/integration/test_cluster.sh does, with `trap nc_down EXIT`).
# Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); `up` fails with a message where
# namespaces cannot be made, and removes what it made.

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    NC_ID="${NETNS_CLUSTER_ID:-1}"        # by hand: id 1 unless told
else
    NC_ID="${NETNS_CLUSTER_ID:-$(($$ % 1000000))}"   # sourced (a test): its own
fi
NC_RATE="${NETNS_CLUSTER_RATE:-1gbit}"
NC_DELAY="${NETNS_CLUSTER_DELAY:-0.2ms}"
NC_STATE="${NETNS_CLUSTER_STATE:-/tmp/ddpm-netns-$NC_ID}"
NC_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

nc_ns() { echo "ddpmc$NC_ID-n$1"; }
nc_sw() { echo "ddpmc$NC_ID-sw"; }
# 10.<200 + id/256 % 50>.<id % 256>.0/24: the harness's own, only inside its namespaces
nc_subnet() { echo "10.$((200 + NC_ID / 256 % 50)).$((NC_ID % 256))"; }
nc_ip() { echo "$(nc_subnet).$(($1 + 1))"; }
nc_k() { cat "$NC_STATE/k" 2>/dev/null || echo 0; }

nc_err() { echo "netns-cluster: $*" >&2; }

# the qdisc of one direction of a link: netem (delay + rate) where the kernel has it,
# else tbf (rate only). $1: namespace, $2: device, $3: rate, $4: delay
nc_qdisc() {
    local ns=$1 dev=$2 rate=$3 delay=$4
    ip netns exec "$ns" tc qdisc del dev "$dev" root 2>/dev/null
    if [ "$(cat "$NC_STATE/netem" 2>/dev/null)" = 1 ]; then
        ip netns exec "$ns" tc qdisc add dev "$dev" root netem delay "$delay" rate "$rate" limit 100000
    else
        # burst: 10 ms at the rate, at least 64 KiB (a GSO packet); queue up to 1 s
        local bps; bps=$(nc_rate_bps "$rate") || return 1
        local burst=$((bps / 8 / 100)); [ $burst -lt 65536 ] && burst=65536
        ip netns exec "$ns" tc qdisc add dev "$dev" root tbf rate "$rate" burst "$burst" latency 1000ms
    fi
}
nc_rate_bps() {   # 1gbit, 25gbit, 100mbit, 2mbit, 500kbit -> bits per second
    local r=${1,,} n
    case "$r" in
        *gbit) n=${r%gbit}; echo $((n * 1000000000)) ;;
        *mbit) n=${r%mbit}; echo $((n * 1000000)) ;;
        *kbit) n=${r%kbit}; echo $((n * 1000)) ;;
        *bit)  echo "${r%bit}" ;;
        *) nc_err "rate '$1': expected <integer>gbit, mbit, kbit or bit"; return 1 ;;
    esac
}

nc_up() {
    local k=$1 i
    case "$k" in ''|*[!0-9]*) nc_err "up: K must be a number of nodes"; return 2 ;; esac
    [ "$k" -ge 1 ] && [ "$k" -le 64 ] || { nc_err "up: K from 1 to 64"; return 2; }
    case "$NC_ID" in ''|*[!0-9]*) nc_err "NETNS_CLUSTER_ID must be digits"; return 2 ;; esac
    [ ${#NC_ID} -le 6 ] || { nc_err "NETNS_CLUSTER_ID: at most 6 digits"; return 2; }
    [ -e "$NC_STATE/k" ] && { nc_err "a cluster with id $NC_ID is up ($NC_STATE); down it first"; return 4; }
    if [ -n "$(nc_existing)" ]; then
        nc_err "namespaces of id $NC_ID exist ($(nc_existing | tr '\n' ' ')): another cluster with this id is up, or one was left behind (NETNS_CLUSTER_ID=$NC_ID $NC_HERE/netns-cluster.sh down removes them)"
        return 4
    fi
    nc_rate_bps "$NC_RATE" >/dev/null || return 2
    # both capabilities up front: with CAP_SYS_ADMIN alone `ip netns add` works and
    # the bridge fails later, which would read as a harness bug, not a missing right
    local cap; cap=$(awk '$1 == "CapEff:" { print $2 }' /proc/self/status 2>/dev/null)
    if [ -n "$cap" ] && { [ $(( 0x$cap >> 12 & 1 )) -eq 0 ] || [ $(( 0x$cap >> 21 & 1 )) -eq 0 ]; }; then
        nc_err "cannot make a network namespace (needs CAP_NET_ADMIN and CAP_SYS_ADMIN; effective capabilities 0x$cap)"
        return 3
    fi
    mkdir -p "$NC_STATE" || return 1
    echo 0 >"$NC_STATE/k"
    if ! ip netns add "$(nc_sw)" 2>"$NC_STATE/err"; then
        nc_err "cannot make a network namespace (needs CAP_NET_ADMIN): $(cat "$NC_STATE/err")"
        rm -rf "$NC_STATE"; return 3
    fi
    local sw; sw=$(nc_sw)
    ip -n "$sw" link add br0 type bridge && ip -n "$sw" link set br0 up && ip -n "$sw" link set lo up \
        || { nc_err "cannot make the bridge"; nc_down; return 3; }
    # netem present? (probe on the switch's loopback)
    if ip netns exec "$sw" tc qdisc add dev lo root netem delay 1ms 2>/dev/null; then
        ip netns exec "$sw" tc qdisc del dev lo root; echo 1 >"$NC_STATE/netem"
    else
        echo 0 >"$NC_STATE/netem"
    fi
    : >"$NC_STATE/hosts"; : >"$NC_STATE/map"
    for ((i = 0; i < k; i++)); do
        local ns; ns=$(nc_ns $i)
        echo $((i + 1)) >"$NC_STATE/k"   # so that down removes what exists so far
        ip netns add "$ns" \
            && ip -n "$sw" link add "n$i" type veth peer name eth0 netns "$ns" \
            && ip -n "$sw" link set "n$i" master br0 && ip -n "$sw" link set "n$i" up \
            && ip -n "$ns" link set lo up \
            && ip -n "$ns" addr add "$(nc_ip $i)/24" dev eth0 && ip -n "$ns" link set eth0 up \
            && nc_qdisc "$ns" eth0 "$NC_RATE" "$NC_DELAY" && nc_qdisc "$sw" "n$i" "$NC_RATE" "$NC_DELAY" \
            || { nc_err "cannot make node $i"; nc_down; return 3; }
        echo "$(nc_ip $i) slots=1" >>"$NC_STATE/hosts"
        echo "$(nc_ip $i) $ns node$i" >>"$NC_STATE/map"
    done
    echo "$NC_RATE $NC_DELAY" >"$NC_STATE/shape"
    echo "$NC_STATE"
}

# the namespaces of this cluster's id that exist (whatever the state folder says)
nc_existing() { ip netns list 2>/dev/null | awk -v p="ddpmc$NC_ID-" 'index($1, p) == 1 { print $1 }'; }

# remove everything: processes on the nodes, namespaces (which takes their veths and
# the bridge with them), the state folder. Safe to call twice, after a partial up,
# or without the state folder (it goes by the namespaces' names).
nc_down() {
    local ns
    nc_kill_all
    for ns in $(nc_existing); do ip netns del "$ns"; done
    rm -rf "$NC_STATE"
    return 0
}

nc_pids() {   # [I]: pids of processes on node I, or on every node
    local ns
    if [ -n "${1:-}" ]; then
        ip netns pids "$(nc_ns "$1")" 2>/dev/null
    else
        for ns in $(nc_existing); do
            case "$ns" in *-n[0-9]*) ip netns pids "$ns" 2>/dev/null ;; esac
        done
    fi
}
nc_kill_all() {
    local p left
    for _ in 1 2 3; do
        left=$(nc_pids)
        [ -z "$left" ] && return 0
        for p in $left; do kill -9 "$p" 2>/dev/null; done
        sleep 0.2
    done
}

nc_check_node() {
    case "$1" in ''|*[!0-9]*) nc_err "node '$1': expected a number"; return 2 ;; esac
    [ "$1" -lt "$(nc_k)" ] || { nc_err "node $1: the cluster has $(nc_k) node(s) (is it up? state: $NC_STATE)"; return 2; }
}

nc_exec() {   # I cmd...: on node I, hostname nodeI
    local i=$1; shift
    nc_check_node "$i" || return $?
    exec_in_node "$(nc_ns "$i")" "node$i" "$@"
}
exec_in_node() {
    local ns=$1 hn=$2; shift 2
    ip netns exec "$ns" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$hn" "$@"
}

nc_mpirun() {
    [ "$(nc_k)" -ge 1 ] || { nc_err "no cluster is up (state: $NC_STATE)"; return 2; }
    NETNS_CLUSTER_STATE="$NC_STATE" nc_exec 0 mpirun --allow-run-as-root \
        --hostfile "$NC_STATE/hosts" --map-by node --bind-to none \
        --mca plm_rsh_agent "$NC_HERE/netns-agent.sh" --mca plm_rsh_no_tree_spawn 1 \
        --mca btl tcp,self --mca btl_tcp_if_include "$(nc_subnet).0/24" \
        --mca oob_tcp_if_include "$(nc_subnet).0/24" \
        -x NETNS_CLUSTER_STATE "$@"
}

nc_link() {   # I up|down
    nc_check_node "$1" || return $?
    case "$2" in up|down) ;; *) nc_err "link: up or down"; return 2 ;; esac
    ip -n "$(nc_sw)" link set "n$1" "$2"
}

nc_shape() {   # I RATE [DELAY]
    nc_check_node "$1" || return $?
    nc_rate_bps "$2" >/dev/null || return 2
    local d=${3:-$NC_DELAY}
    nc_qdisc "$(nc_ns "$1")" eth0 "$2" "$d" && nc_qdisc "$(nc_sw)" "n$1" "$2" "$d"
}

nc_info() {
    local k i
    k=$(nc_k)
    [ "$k" -ge 1 ] || { echo "no cluster up (state: $NC_STATE)"; return 1; }
    echo "cluster $NC_ID: $k node(s) on $(nc_subnet).0/24, state $NC_STATE, shaping $(cat "$NC_STATE/shape") per direction ($( [ "$(cat "$NC_STATE/netem")" = 1 ] && echo "netem: delay and rate" || echo "tbf: rate only, the kernel has no sch_netem, so no delay"))"
    for ((i = 0; i < k; i++)); do
        echo "  node$i $(nc_ip $i) netns $(nc_ns $i) link $(ip -n "$(nc_sw)" -br link show "n$i" 2>/dev/null | awk '{print $2}')"
    done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    verb=${1:-}; shift || true
    case "$verb" in
        up) nc_up "${1:-}" ;;
        down) nc_down ;;
        exec) nc_exec "$@" ;;
        mpirun) nc_mpirun "$@" ;;
        link) nc_link "$@" ;;
        shape) nc_shape "$@" ;;
        pids) nc_pids "$@" ;;
        kill) nc_kill_all ;;
        info) nc_info ;;
        *) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
fi
