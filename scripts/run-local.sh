#!/usr/bin/env bash
# scripts/run-local.sh - `make run`: a complete imbridge stack on loopback.
#
# Starts, all in one temp dir and on free ports: redis-server, a Prosody
# (scripts/prosody-conf.sh) with demo users alice, bob and carol,
# bin/imb-xmppd (plain XMPP, 2 workers) and bin/imb-edge; waits until each is
# ready, prints how to connect a phone client (bin/imcat) and a desktop XMPP
# client, then stays in the foreground.  Ctrl-C (SIGINT) or SIGTERM stops every
# process it started, by PID, and removes the temp dir.
#
# Environment:
#   IMB_RUN_PORT      preferred edge port (default 7222; the next free one is
#                     used when it is busy)
#   IMB_RUN_PASSWORD  one password for all demo users (default: random-ish)
#   IMB_RUN_KEEP=1    keep the temp dir (logs) after stopping; it is always
#                     kept when a service fails to start or dies
#   IMB_RUN_TIMEOUT   seconds to wait for each service to be ready (default 30)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BIN=$ROOT/bin
DOMAIN=localhost
USERS=(alice bob carol)
declare -A PASS     # user -> password
ready_timeout=${IMB_RUN_TIMEOUT:-30}

# Never fails: with the terminal gone, a failed write must not stop cleanup.
say() { printf '%s\n' "$*" 2>/dev/null || true; }
# On a failure after the temp dir exists, its logs are kept for a look.
die() { printf 'run-local: %s\n' "$*" >&2; [ -n "${RUN_DIR:-}" ] && IMB_RUN_KEEP=1; exit 1; }

# ---------------------------------------------------------------- preflight
for b in imb-edge imb-xmppd; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: build it first (make all), or use 'make run'"
done
[ -x "$BIN/imcat" ] || say "run-local: note: $BIN/imcat is not built yet (make all builds it)" >&2
for c in redis-server redis-cli prosody prosodyctl od; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' not found: run scripts/deps.sh"
done
[ -x "$ROOT/scripts/prosody-conf.sh" ] || die "scripts/prosody-conf.sh is missing"

case ${IMB_RUN_PORT:-7222} in
    ''|*[!0-9]*) die "IMB_RUN_PORT must be a port number, not '${IMB_RUN_PORT}'" ;;
esac
edge_pref=${IMB_RUN_PORT:-7222}
[ "$edge_pref" -ge 1 ] && [ "$edge_pref" -le 65535 ] || die "IMB_RUN_PORT out of range: $edge_pref"

# ------------------------------------------------------- processes, cleanup
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/imb-run.XXXXXX")
PIDS=()      # started processes, in start order
NAMES=()     # their names, same index
sleeper=""
cleaning=0

# True while $1 runs (a zombie, i.e. exited but not yet reaped, is not alive).
alive() {
    local st
    { read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
    st=${st##*) }
    [ "${st:0:1}" != Z ]
}

# Stop one PID: SIGTERM, up to 10 s, then SIGKILL; reap it.
stop_pid() {
    local pid=$1 i
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        say "run-local: pid $pid did not stop on SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local i
    [ "$cleaning" = 1 ] && return 0
    cleaning=1
    set +e
    trap '' INT TERM HUP PIPE
    [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
    # Reverse start order: edge, xmppd, prosody, redis.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
    done
    if [ "${IMB_RUN_KEEP:-0}" = 1 ]; then
        say "run-local: stopped; logs kept in $RUN_DIR"
    else
        rm -rf "$RUN_DIR"
        say "run-local: stopped; removed $RUN_DIR"
    fi
}
trap cleanup EXIT
trap 'say ""; say "run-local: stopping..."; exit 130' INT
trap 'say "run-local: stopping..."; exit 143' TERM
# A closed terminal (or tmux/ssh going away) must not leave the stack running.
trap 'exit 129' HUP

# start NAME LOG CMD... : start CMD in the background, stdout+stderr to LOG.
start() {
    local name=$1 log=$2
    shift 2
    "$@" </dev/null >>"$log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
    last_pid=$!
}

# Forget the last started process (after it died and was reaped).
forget_last() {
    unset 'PIDS[${#PIDS[@]}-1]' 'NAMES[${#NAMES[@]}-1]'
    PIDS=("${PIDS[@]}")
    NAMES=("${NAMES[@]}")
}

show_log() {
    say "---- last lines of $1 ----" >&2
    tail -n 20 "$1" >&2 2>/dev/null || true
    say "----" >&2
}

# --------------------------------------------------------------------- ports
# True when nothing uses TCP port $1 on loopback (any state).
port_free() {
    if command -v ss >/dev/null 2>&1; then
        [ -z "$(ss -Htan "sport = :$1" 2>/dev/null)" ]
    else
        ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# A random free port below the kernel's ephemeral range, not in $*.
random_port() {
    local p i x
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        for x in "$@"; do [ "$p" = "$x" ] && continue 2; done
        port_free "$p" && { echo "$p"; return 0; }
    done
    die "no free port found"
}

# true when something accepts TCP connections on 127.0.0.1:$1
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# --------------------------------------------------------------------- redis
mkdir -p "$RUN_DIR/redis"
redis_log=$RUN_DIR/redis.log
redis_port=""
for attempt in 1 2 3 4 5; do
    p=$(random_port)
    # AOF, as docker-compose runs it: the inbox of messages waiting for a
    # phone and the per-user numbering survive a restart of Redis.
    start redis "$redis_log" redis-server --bind 127.0.0.1 --port "$p" \
        --save '' --appendonly yes --appendfsync everysec --dir "$RUN_DIR/redis" --daemonize no
    for ((i = 0; i < 100; i++)); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$p" ping 2>/dev/null)" = PONG ]; then
            redis_port=$p
            break
        fi
        alive "$last_pid" || break
        sleep 0.1
    done
    [ -n "$redis_port" ] && break
    stop_pid "$last_pid"
    forget_last
    say "run-local: redis did not come up on port $p (attempt $attempt)" >&2
done
[ -n "$redis_port" ] || { show_log "$redis_log"; die "redis-server did not start"; }

# ------------------------------------------------------------------- prosody
pdir=$RUN_DIR/prosody
prosody_log=$RUN_DIR/prosody.out
c2s_port=""
http_port=""
for attempt in 1 2 3; do
    c=$(random_port "$redis_port")
    h=$(random_port "$redis_port" "$c")
    "$ROOT/scripts/prosody-conf.sh" "$pdir" "$c" "$h" "$DOMAIN"
    if [ "$attempt" = 1 ]; then
        # Accounts live in the data dir; registering works with prosody down.
        for u in "${USERS[@]}"; do
            PASS[$u]=${IMB_RUN_PASSWORD:-$u-$(hex 3)}
            prosodyctl --config "$pdir/prosody.cfg.lua" register "$u" "$DOMAIN" "${PASS[$u]}" \
                >>"$RUN_DIR/prosodyctl.log" 2>&1 ||
                { show_log "$RUN_DIR/prosodyctl.log"; die "prosodyctl register $u failed"; }
        done
    fi
    start prosody "$prosody_log" prosody --config "$pdir/prosody.cfg.lua" -F
    for ((i = 0; i < 100; i++)); do
        if port_open "$c" && port_open "$h"; then
            c2s_port=$c
            http_port=$h
            break
        fi
        alive "$last_pid" || break
        sleep 0.1
    done
    [ -n "$c2s_port" ] && break
    stop_pid "$last_pid"
    forget_last
    say "run-local: prosody did not open ports $c/$h (attempt $attempt)" >&2
done
[ -n "$c2s_port" ] || { show_log "$pdir/prosody.log"; show_log "$prosody_log"; die "prosody did not start"; }

# ------------------------------------------------------------------ services
cred_key=$(hex 32)
# Phones reach the edge over TLS even on loopback: a throw-away self-signed
# certificate for 127.0.0.1 / localhost, which imcat verifies (--cafile).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$RUN_DIR/edge.key" -out "$RUN_DIR/edge.crt" >/dev/null 2>&1 ||
    die "openssl could not make a certificate for the edge"
common=(--redis-host 127.0.0.1 --redis-port "$redis_port" --cred-key "$cred_key" --log-level info)

# wait_log PID LOG PATTERN COUNT: wait until LOG has COUNT lines matching
# PATTERN; fails if PID exits first or after $ready_timeout seconds.
wait_log() {
    local pid=$1 log=$2 pat=$3 want=$4 i n
    for ((i = 0; i < ready_timeout * 10; i++)); do
        n=$(grep -c -- "$pat" "$log" 2>/dev/null || true)
        [ "${n:-0}" -ge "$want" ] && return 0
        alive "$pid" || return 1
        sleep 0.1
    done
    return 1
}

xmppd_log=$RUN_DIR/xmppd.log
start xmppd "$xmppd_log" "$BIN/imb-xmppd" "${common[@]}" \
    --xmpp-host 127.0.0.1 --xmpp-port "$c2s_port" --xmpp-tls disabled --workers 2
xmppd_pid=$last_pid
wait_log "$xmppd_pid" "$xmppd_log" worker_ready 2 ||
    { show_log "$xmppd_log"; die "imb-xmppd did not report 2 x worker_ready within ${ready_timeout}s"; }

edge_log=$RUN_DIR/edge.log
edge_addr=""
p=$edge_pref
for attempt in 1 2 3 4 5; do
    # Next free port from the preferred one on.
    for ((i = 0; i < 100; i++)); do
        port_free "$p" && break
        p=$((p + 1))
        [ "$p" -le 65535 ] || die "no free port at or above $edge_pref for imb-edge"
    done
    : >"$edge_log"
    start edge "$edge_log" "$BIN/imb-edge" "${common[@]}" --listen "127.0.0.1:$p" \
        --tls on --tls-cert "$RUN_DIR/edge.crt" --tls-key "$RUN_DIR/edge.key"
    if wait_log "$last_pid" "$edge_log" 'listening addr=' 1; then
        edge_addr=$(grep -o 'listening addr=[^ ]*' "$edge_log" | head -n 1)
        edge_addr=${edge_addr#listening addr=}
        break
    fi
    alive "$last_pid" && { show_log "$edge_log"; die "imb-edge not ready within ${ready_timeout}s"; }
    stop_pid "$last_pid"
    forget_last
    say "run-local: imb-edge did not start on port $p (attempt $attempt)" >&2
    cp "$edge_log" "$RUN_DIR/edge.attempt$attempt.log"
    p=$((p + 1))
done
[ -n "$edge_addr" ] || { show_log "$edge_log"; die "imb-edge did not start"; }
edge_port=${edge_addr##*:}

# ---------------------------------------------------------------- the banner
if [ "$PWD" = "$ROOT" ]; then imcat=bin/imcat; else imcat=$BIN/imcat; fi
cat <<EOF

imbridge is running on loopback (temp dir $RUN_DIR)

  accounts (domain $DOMAIN):
$(for u in "${USERS[@]}"; do printf '    %-6s %s@%s   password: %s\n' "$u" "$u" "$DOMAIN" "${PASS[$u]}"; done)

  phone client -> imb-edge at 127.0.0.1:$edge_port (TLS, certificate $RUN_DIR/edge.crt)
    $imcat --host 127.0.0.1 --port $edge_port --cafile $RUN_DIR/edge.crt --user alice@$DOMAIN --password ${PASS[alice]}

  desktop XMPP client (e.g. Gajim, Psi, Dino, Pidgin) -> Prosody
    server 127.0.0.1, port $c2s_port, account bob@$DOMAIN, password ${PASS[bob]}
    encryption: none / plain (no TLS)
    BOSH: http://127.0.0.1:$http_port/http-bind   websocket: ws://127.0.0.1:$http_port/xmpp-websocket

  redis: 127.0.0.1:$redis_port   (redis-cli -p $redis_port psubscribe '*')

  logs:  $RUN_DIR/{edge,xmppd,redis}.log  $pdir/prosody.log
    tail -f $edge_log $xmppd_log

Ctrl-C stops everything and removes $RUN_DIR.
EOF

# ------------------------------------------------------------------- monitor
while :; do
    for i in "${!PIDS[@]}"; do
        if ! alive "${PIDS[i]}"; then
            name=${NAMES[i]}
            wait "${PIDS[i]}" 2>/dev/null && rc=0 || rc=$?
            say "run-local: $name (pid ${PIDS[i]}) exited with status $rc; stopping the rest" >&2
            case $name in
                prosody) show_log "$pdir/prosody.log" ;;
                *) show_log "$RUN_DIR/$name.log" ;;
            esac
            IMB_RUN_KEEP=1
            exit 1
        fi
    done
    sleep 1 &
    sleeper=$!
    wait "$sleeper" 2>/dev/null || true
    sleeper=""
done
