#!/bin/sh
# redis-cluster-init.sh - makes Redis nodes started with --cluster-enabled
# one Redis Cluster, once: the `cluster` profile's one-shot in
# docker-compose.yml runs it when all six nodes answer. The first run
# creates the cluster (`redis-cli --cluster create`: the first third of the
# nodes become masters with the slots split evenly, the others their
# replicas); a later run finds the first node already in a cluster and
# creates nothing. Either way it exits 0 once every node reports
# cluster_state:ok.
#   redis-cluster-init.sh [--replicas N] host:port host:port ...
# The Redis password, if any, comes in REDISCLI_AUTH (redis-cli reads it;
# never on the command line). Needs redis-cli, getent, sed.
set -eu

replicas=1
if [ "${1:-}" = "--replicas" ]; then
    replicas=$2
    shift 2
fi
if [ $# -lt 3 ]; then
    echo "usage: $0 [--replicas N] host:port host:port host:port ..." >&2
    exit 2
fi

# One field of CLUSTER INFO of ip:port ("" if the node does not answer).
cluster_info() {
    redis-cli -h "${1%:*}" -p "${1##*:}" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

# CLUSTER MEET (what --cluster create sends) takes addresses, not names.
addrs=""
for node in "$@"; do
    host=${node%:*}
    port=${node##*:}
    ip=$(getent ahostsv4 "$host" | { read -r a _ && echo "$a"; } || true)
    if [ -z "$ip" ]; then
        echo "redis-cluster-init: cannot resolve $host" >&2
        exit 1
    fi
    tries=0
    until [ "$(redis-cli -h "$ip" -p "$port" ping 2>/dev/null)" = PONG ]; do
        tries=$((tries + 1))
        if [ "$tries" -ge 60 ]; then
            echo "redis-cluster-init: $node ($ip) does not answer PING" >&2
            exit 1
        fi
        sleep 1
    done
    addrs="$addrs $ip:$port"
done
addrs=${addrs# }
first=${addrs%% *}

known=$(cluster_info "$first" cluster_known_nodes)
if [ "${known:-1}" -gt 1 ]; then
    echo "redis-cluster-init: $first already knows $known nodes: the cluster exists"
else
    # shellcheck disable=SC2086 # one argument per node
    redis-cli --cluster create $addrs --cluster-replicas "$replicas" --cluster-yes
fi

for a in $addrs; do
    tries=0
    until [ "$(cluster_info "$a" cluster_state)" = ok ]; do
        tries=$((tries + 1))
        if [ "$tries" -ge 120 ]; then
            echo "redis-cluster-init: $a: cluster_state is not ok after 60 s" >&2
            exit 1
        fi
        sleep 0.5
    done
done
echo "redis-cluster-init: cluster_state:ok on all $# nodes"
