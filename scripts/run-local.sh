#!/usr/bin/env bash
# scripts/run-local.sh - `make run`: a complete imbridge stack on loopback.
#
# Starts, all in one temp dir: redis-server, a Prosody (scripts/prosody-conf.sh)
# with demo users alice, bob and carol (each other's contacts, subscribed both
# ways, through a mod_groups shared roster) and a room anyone may set the
# subject of, bin/imb-xmppd (plain XMPP, 2 workers), bin/imb-edge and a browser
# chat page (converse.js from web/node_modules, installed here with
# `npm ci` the first time; served by that Prosody, talking to it over
# websocket, logged in as bob).  Waits until each is ready, prints the page's
# URL and the imcat command for a phone (alice), then stays in the
# foreground.  Ctrl-C (SIGINT) or SIGTERM stops every process it started, by
# PID, removes the temp dir and exits 0.
#
# Ports are stable: with base B (IMB_RUN_PORT, default 7222), imb-edge listens
# on B, Prosody's HTTP (page, BOSH, websocket) on B+1, Prosody's c2s on B+2,
# Redis on B+3.  When one of those is busy the next block (B+10..B+13, ...)
# is tried, and the banner says so.
#
# Environment:
#   IMB_RUN_PORT      base port (default 7222)
#   IMB_RUN_PASSWORD  the password of every demo user (default imbridge-demo);
#                     it is never put on a command line (prosodyctl reads it
#                     on stdin, the page from a file, imcat from
#                     $IMCAT_PASSWORD)
#   IMB_RUN_KEEP=1    keep the temp dir (logs) after stopping; it is always
#                     kept when a service fails to start or dies
#   IMB_RUN_TIMEOUT   seconds to wait for each service to be ready (default 30)
#   IMB_RUN_WEB=0     no browser page (no npm)
#   TMPDIR            where the temp dir (imb-run.XXXXXX) is made
#   IMB_RUN_BIN_DIR   where imb-edge, imb-xmppd and imcat are (default bin/;
#                     the tests point it at build/asan/bin)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BIN=${IMB_RUN_BIN_DIR:-$ROOT/bin}
DOMAIN=localhost
USERS=(alice bob carol)
PHONE_USER=alice    # the banner's imcat command
WEB_USER=bob        # the browser page
ROOM=demo@conference.$DOMAIN
password=${IMB_RUN_PASSWORD:-imbridge-demo}
ready_timeout=${IMB_RUN_TIMEOUT:-30}

# Never fails: with the terminal gone, a failed write must not stop cleanup.
say() { printf '%s\n' "$*" 2>/dev/null || true; }
# On a failure after the temp dir exists, its logs are kept for a look.
die() { printf 'run-local: %s\n' "$*" >&2; [ -n "${RUN_DIR:-}" ] && IMB_RUN_KEEP=1; exit 1; }

# Ctrl-C in a terminal signals the whole foreground process group, `make`
# included, which then dies of SIGINT (status 130) however cleanly we stop.
# So from a terminal the script runs again as a job of its own: bash job
# control (set -m) gives that job its own process group and the terminal,
# Ctrl-C reaches only it, it stops everything and exits 0, and so does make.
if [ -t 0 ] && [ -z "${IMB_RUN_JOB:-}" ]; then
    set -m
    rc=0
    IMB_RUN_JOB=1 "$BASH" "${BASH_SOURCE[0]}" "$@" || rc=$?
    exit "$rc"
fi

# ---------------------------------------------------------------- preflight
for b in imb-edge imb-xmppd; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: build it first (make all), or use 'make run'"
done
[ -x "$BIN/imcat" ] || say "run-local: note: $BIN/imcat is not built yet (make all builds it)" >&2
for c in redis-server redis-cli prosody prosodyctl od openssl setsid; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' not found: run scripts/deps.sh"
done
[ -x "$ROOT/scripts/prosody-conf.sh" ] || die "scripts/prosody-conf.sh is missing"

case ${IMB_RUN_PORT:-7222} in
    ''|*[!0-9]*) die "IMB_RUN_PORT must be a port number, not '${IMB_RUN_PORT}'" ;;
esac
base_pref=${IMB_RUN_PORT:-7222}
[ "$base_pref" -ge 1 ] && [ "$base_pref" -le 65532 ] || die "IMB_RUN_PORT out of range: $base_pref (1..65532)"
# It goes into the banner's shell line and the page's script as is.
case $password in
    ''|*[!A-Za-z0-9._~+=:,@%/-]*) die "IMB_RUN_PASSWORD: 1 or more of A-Z a-z 0-9 . _ ~ + = : , @ % / -" ;;
esac

# -------------------------------------------------------------- the web page
# converse.js comes from npm, pinned by web/package-lock.json, into the
# git-ignored web/node_modules: the only network use, once.
web=${IMB_RUN_WEB:-1}
converse_dist=$ROOT/web/node_modules/converse.js/dist
if [ "$web" = 1 ] && [ ! -f "$converse_dist/converse.min.js" ]; then
    if command -v npm >/dev/null 2>&1; then
        say "run-local: installing converse.js for the browser page (npm ci in web/, once)"
        (cd "$ROOT/web" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) >&2 ||
            say "run-local: npm ci failed; no browser page this time" >&2
    else
        say "run-local: npm not found (scripts/deps.sh installs it); no browser page" >&2
    fi
    [ -f "$converse_dist/converse.min.js" ] || web=0
fi

# ------------------------------------------------------- processes, cleanup
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/imb-run.XXXXXX")
PIDS=()      # started processes, in start order
NAMES=()     # their names, same index
sleeper=""
cleaning=0
unclean=0    # 1 when a service did not exit 0 on SIGTERM
stop_rc=0    # exit status of the last stop_pid

# True while $1 runs (a zombie, i.e. exited but not yet reaped, is not alive).
alive() {
    local st
    { read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
    st=${st##*) }
    [ "${st:0:1}" != Z ]
}

# Stop one PID: SIGTERM, up to 10 s, then SIGKILL; reap it; its exit status
# in stop_rc (0 when it was reaped before).
stop_pid() {
    local pid=$1 i
    stop_rc=0
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
    wait "$pid" 2>/dev/null || stop_rc=$?
}

cleanup() {
    local i
    [ "$cleaning" = 1 ] && return 0
    cleaning=1
    set +e
    trap '' INT TERM HUP PIPE
    [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
    # SIGTERM to all in reverse start order (edge, xmppd, prosody, redis),
    # then wait for each (SIGKILL after 10 s).
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[i]}" 2>/dev/null
    done
    # A service that does not exit 0 on SIGTERM (a sanitizer report, say)
    # makes the stop unclean: logs kept, exit status 1.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
        if [ "$stop_rc" != 0 ]; then
            say "run-local: ${NAMES[i]} (pid ${PIDS[i]}) exited with status $stop_rc when stopped" >&2
            IMB_RUN_KEEP=1
            unclean=1
        fi
    done
    if [ "${IMB_RUN_KEEP:-0}" = 1 ]; then
        say "run-local: stopped; logs kept in $RUN_DIR"
    else
        rm -rf "$RUN_DIR"
        say "run-local: stopped; removed $RUN_DIR"
    fi
    [ "$unclean" = 0 ] || exit 1
}
trap cleanup EXIT
# A stop asked for is a clean exit (status 0), so `make run` ends quietly.
trap 'say ""; say "run-local: stopping..."; exit 0' INT
trap 'say "run-local: stopping..."; exit 0' TERM
# A closed terminal (or tmux/ssh going away) must not leave the stack running.
trap 'exit 129' HUP

# start NAME LOG CMD... : start CMD in the background, stdout+stderr to LOG,
# in a session of its own (setsid execs in place: the PID is CMD's), so a
# Ctrl-C in the terminal reaches only this script, which then stops each
# service once, in order, with SIGTERM (a service signalled twice, by the
# terminal and by us, could die half-way through its shutdown).
start() {
    local name=$1 log=$2
    shift 2
    setsid "$@" </dev/null >>"$log" 2>&1 &
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
# True when nothing listens on TCP port $1 (connections of a previous run
# in TIME-WAIT do not count: every server here binds with SO_REUSEADDR).
port_free() {
    if command -v ss >/dev/null 2>&1; then
        [ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]
    else
        ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# true when something accepts TCP connections on 127.0.0.1:$1
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# The first block of four free ports: B, B+10, B+20, ...
base=""
for ((k = 0; k < 10; k++)); do
    b=$((base_pref + 10 * k))
    [ $((b + 3)) -le 65535 ] || break
    port_free "$b" && port_free $((b + 1)) && port_free $((b + 2)) && port_free $((b + 3)) &&
        { base=$b; break; }
done
[ -n "$base" ] || die "no four free ports at $base_pref, $((base_pref + 10)), ...: set IMB_RUN_PORT to another base port"
edge_port=$base
http_port=$((base + 1))
c2s_port=$((base + 2))
redis_port=$((base + 3))
moved=""
[ "$base" = "$base_pref" ] || moved="(ports $base_pref..$((base_pref + 3)) were busy, so $base..$((base + 3)))"

# wait_port PID PORT: wait until PORT accepts; fails if PID exits first or
# after $ready_timeout seconds.
wait_port() {
    local pid=$1 port=$2 i
    for ((i = 0; i < ready_timeout * 10; i++)); do
        port_open "$port" && return 0
        alive "$pid" || return 1
        sleep 0.1
    done
    return 1
}

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

# --------------------------------------------------------------------- redis
mkdir -p "$RUN_DIR/redis"
redis_log=$RUN_DIR/redis.log
# AOF, as docker-compose runs it: the inbox of messages waiting for a phone
# and the per-user numbering survive a restart of Redis.
start redis "$redis_log" redis-server --bind 127.0.0.1 --port "$redis_port" \
    --save '' --appendonly yes --appendfsync everysec --dir "$RUN_DIR/redis" --daemonize no
redis_ok=0
for ((i = 0; i < ready_timeout * 10; i++)); do
    [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ] && { redis_ok=1; break; }
    alive "$last_pid" || break
    sleep 0.1
done
[ "$redis_ok" = 1 ] || { show_log "$redis_log"; die "redis-server did not start on port $redis_port"; }

# ------------------------------------------------------------------- prosody
# $RUN_DIR/web/www is served at http://127.0.0.1:$http_port/ ; groups.txt
# next to it is the shared roster that makes the demo users contacts.
pdir=$RUN_DIR/prosody
prosody_log=$RUN_DIR/prosody.out
www=$RUN_DIR/web/www
mkdir -p "$www"
{
    echo "[imbridge demo]"
    for u in "${USERS[@]}"; do echo "$u@$DOMAIN=$u"; done
} >"$RUN_DIR/web/groups.txt"
PROSODY_DEMO=$www "$ROOT/scripts/prosody-conf.sh" "$pdir" "$c2s_port" "$http_port" "$DOMAIN"
# Accounts live in the data dir; adding them works with prosody down, and
# adduser reads the password (twice) on stdin, never from argv.
for u in "${USERS[@]}"; do
    printf '%s\n%s\n' "$password" "$password" |
        prosodyctl --config "$pdir/prosody.cfg.lua" adduser "$u@$DOMAIN" >>"$RUN_DIR/prosodyctl.log" 2>&1 ||
        { show_log "$RUN_DIR/prosodyctl.log"; die "prosodyctl adduser $u@$DOMAIN failed"; }
done
if [ "$web" = 1 ]; then
    cp "$ROOT/web/index.html" "$www/index.html"
    ln -s "$converse_dist" "$www/converse"
    # What the page logs in with; loopback only, like the rest.
    cat >"$www/demo.js" <<JS
// Written by scripts/run-local.sh for this run.
window.IMB_DEMO = { jid: "$WEB_USER@$DOMAIN", password: "$password", room: "$ROOM" };
JS
fi
start prosody "$prosody_log" prosody --config "$pdir/prosody.cfg.lua" -F
prosody_pid=$last_pid
{ wait_port "$prosody_pid" "$c2s_port" && wait_port "$prosody_pid" "$http_port"; } ||
    { show_log "$pdir/prosody.log"; show_log "$prosody_log"; die "prosody did not open ports $c2s_port and $http_port"; }

# ------------------------------------------------------------------ services
cred_key=$(hex 32)
# Phones reach the edge over TLS even on loopback: a throw-away self-signed
# certificate for 127.0.0.1 / localhost, which imcat verifies (--cafile).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$RUN_DIR/edge.key" -out "$RUN_DIR/edge.crt" >/dev/null 2>&1 ||
    die "openssl could not make a certificate for the edge"
common=(--redis-host 127.0.0.1 --redis-port "$redis_port" --cred-key "$cred_key" --log-level info)

xmppd_log=$RUN_DIR/xmppd.log
start xmppd "$xmppd_log" "$BIN/imb-xmppd" "${common[@]}" \
    --xmpp-host 127.0.0.1 --xmpp-port "$c2s_port" --xmpp-tls disabled --workers 2
xmppd_pid=$last_pid
edge_log=$RUN_DIR/edge.log
start edge "$edge_log" "$BIN/imb-edge" "${common[@]}" --listen "127.0.0.1:$edge_port" \
    --tls on --tls-cert "$RUN_DIR/edge.crt" --tls-key "$RUN_DIR/edge.key"
edge_pid=$last_pid
wait_log "$xmppd_pid" "$xmppd_log" worker_ready 2 ||
    { show_log "$xmppd_log"; die "imb-xmppd did not report 2 x worker_ready within ${ready_timeout}s"; }
wait_log "$edge_pid" "$edge_log" 'listening addr=' 1 ||
    { show_log "$edge_log"; die "imb-edge did not listen on 127.0.0.1:$edge_port within ${ready_timeout}s"; }

# ---------------------------------------------------------------- the banner
if [ "$PWD" = "$ROOT" ] && [ "$BIN" = "$ROOT/bin" ]; then imcat=bin/imcat; else imcat=$BIN/imcat; fi
if [ "$web" = 1 ]; then
    page="http://127.0.0.1:$http_port/   (converse.js, logged in as $WEB_USER@$DOMAIN)"
else
    page="(none: IMB_RUN_WEB=0 or converse.js not installed)"
fi
cat <<BANNER

imbridge is running on loopback ${moved}

  1. browser:  open $page
  2. phone:    in another terminal, imcat as $PHONE_USER@$DOMAIN (TLS to imb-edge on 127.0.0.1:$edge_port):
       export IMCAT_PASSWORD=$password
       $imcat --host 127.0.0.1 --port $edge_port --cafile $RUN_DIR/edge.crt --user $PHONE_USER@$DOMAIN --to $WEB_USER@$DOMAIN
     type a line to chat with $WEB_USER; /join $ROOM for the demo room, /help for more.

  accounts: ${USERS[*]} (@$DOMAIN), password $password, all contacts of each other;
    any of them may set the subject of $ROOM.
  desktop XMPP client (Gajim, Dino, ...): server 127.0.0.1 port $c2s_port, no TLS;
    BOSH http://127.0.0.1:$http_port/http-bind  websocket ws://127.0.0.1:$http_port/xmpp-websocket
  redis:    127.0.0.1:$redis_port   (redis-cli -p $redis_port psubscribe '*')
  logs:     $RUN_DIR/{edge,xmppd,redis}.log  $pdir/prosody.log

Ctrl-C stops everything and removes $RUN_DIR.
BANNER

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
    # Run as the terminal's job (see the top): if the parent script is gone
    # (make got SIGTERM), nobody would stop us; stop now.
    if [ -n "${IMB_RUN_JOB:-}" ]; then
        { read -r st <"/proc/$$/stat"; } 2>/dev/null || st=""
        st=${st##*) }
        read -r _ ppid _ <<<"$st"
        [ "${ppid:-}" = "$PPID" ] || { say "run-local: parent gone; stopping"; exit 0; }
    fi
    sleep 1 &
    sleeper=$!
    wait "$sleeper" 2>/dev/null || true
    sleeper=""
done
