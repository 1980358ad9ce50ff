#!/bin/sh
# Open MPI's launch agent for the emulated cluster (ops/netns-cluster.sh passes it
# as plm_rsh_agent): called like ssh, `netns-agent.sh [options] HOST command...`,
# it runs the command (a shell command line, as ssh would hand it to the remote
# shell) in the namespace of the node whose address is HOST, under its hostname.
# Only the hosts of the cluster in $NETNS_CLUSTER_STATE/map are accepted.
while [ $# -gt 0 ]; do
    case "$1" in -*) shift ;; *) break ;; esac   # ssh-style options: none apply
done
host=$1; shift
map="${NETNS_CLUSTER_STATE:?netns-agent.sh: NETNS_CLUSTER_STATE is not set}/map"
line=$(awk -v h="$host" '$1 == h || $3 == h { print $2, $3; exit }' "$map" 2>/dev/null)
[ -n "$line" ] || { echo "netns-agent.sh: $host is not a node of the cluster in $map" >&2; exit 255; }
set -- "${line% *}" "${line#* }" "$*"
exec ip netns exec "$1" unshare --uts sh -c 'hostname "$0" && exec sh -c "$1"' "$2" "$3"
