#!/bin/bash
# deploy/healthcheck.sh - installed as imb-healthcheck (/usr/local/bin in the
# image, /usr/bin from the Debian package): the
# container HEALTHCHECK of the imbridge image, which has no curl. It speaks
# just enough HTTP/1.0 over bash's /dev/tcp to GET /healthz.
#
#   imb-healthcheck                  auto: find the service running here
#   imb-healthcheck edge|xmppd       auto, for that service
#   imb-healthcheck http HOST:PORT   GET /healthz, healthy on status 200
#   imb-healthcheck tcp HOST:PORT    healthy when a TCP connect succeeds
#
# Auto mode: when IMB_HTTP_LISTEN is set (the image sets 0.0.0.0:9100; both
# services serve /healthz there), the HTTP check on that address (0.0.0.0 and
# :: mean loopback): it proves the Redis round trip and, for xmppd, the XMPP
# server. With http_listen emptied (IMB_HTTP_LISTEN=""), or a binary older than
# the option, the edge gets the TCP check on its phone port (IMB_LISTEN,
# default 127.0.0.1:7222), which only proves its listener accepts; the xmppd
# supervisor has no other port, so it only gets a process check.
#
# Exit 0 healthy, 1 unhealthy (the reason on stdout, which docker keeps in
# `docker inspect`), 2 usage.
set -u

# The programs sit next to this script wherever it is installed
# (/usr/local/bin in the image, /usr/bin from the Debian package).
self_dir=${0%/*}
[ "$self_dir" = "$0" ] && self_dir=.
BIN_DIR=${IMB_HEALTHCHECK_BIN_DIR:-$self_dir}
TIMEOUT=${IMB_HEALTHCHECK_TIMEOUT:-3}

# split ADDR -> globals host, port; wildcard hosts become loopback.
split() {
    local a=$1
    port=${a##*:}
    host=${a%:*}
    host=${host#[}
    host=${host%]}
    case $host in
        "" | 0.0.0.0 | "*") host=127.0.0.1 ;;
        "::") host=::1 ;;
    esac
    case $port in
        "" | *[!0-9]*) echo "unhealthy: bad address '$a'"; exit 2 ;;
    esac
}

check_tcp() {
    split "$1"
    if timeout "$TIMEOUT" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null; then
        echo "ok: $host:$port accepts connections"
        exit 0
    fi
    echo "unhealthy: nothing accepts on $host:$port"
    exit 1
}

check_http() {
    split "$1"
    local out
    # The child prints the whole response; HTTP/1.0 makes the server close.
    out=$(timeout "$TIMEOUT" bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n" "$0" >&3
        cat <&3' "$host" "$port" 2>/dev/null)
    local status=${out%%$'\r'*}
    status=${status%%$'\n'*}
    local body=${out#*$'\r\n\r\n'}
    body=${body%$'\n'}
    case $status in
        "HTTP/1."[01]" 200"*)
            echo "ok: http://$host:$port/healthz: ${body:-ok}"
            exit 0 ;;
        "")
            echo "unhealthy: no HTTP answer from $host:$port" ;;
        *)
            echo "unhealthy: http://$host:$port/healthz: ${status#HTTP/1.? } ${body:0:200}" ;;
    esac
    exit 1
}

running() { # NAME: is a process with this comm alive?
    local f c
    for f in /proc/[0-9]*/comm; do
        read -r c 2>/dev/null <"$f" || continue
        [ "$c" = "$1" ] && return 0
    done
    return 1
}

auto() {
    local svc=${1:-}
    if [ -z "$svc" ]; then
        if running imb-edge; then svc=edge
        elif running imb-xmppd; then svc=xmppd
        else echo "unhealthy: neither imb-edge nor imb-xmppd is running"; exit 1
        fi
    fi
    local http=${IMB_HTTP_LISTEN:-}
    if [ -n "$http" ] && "$BIN_DIR/imb-$svc" --help 2>/dev/null | grep -q -- '--http-listen '; then
        check_http "$http"
    fi
    case $svc in
        edge) check_tcp "${IMB_LISTEN:-127.0.0.1:7222}" ;;
        xmppd)
            if running imb-xmppd; then
                echo "ok: imb-xmppd is running (no http_listen: process check only)"
                exit 0
            fi
            echo "unhealthy: imb-xmppd is not running"
            exit 1 ;;
    esac
}

case ${1:-} in
    http) [ $# -eq 2 ] || { echo "usage: $0 http HOST:PORT"; exit 2; }; check_http "$2" ;;
    tcp) [ $# -eq 2 ] || { echo "usage: $0 tcp HOST:PORT"; exit 2; }; check_tcp "$2" ;;
    "" | edge | xmppd) auto "${1:-}" ;;
    *) echo "usage: $0 [edge|xmppd | http HOST:PORT | tcp HOST:PORT]"; exit 2 ;;
esac
