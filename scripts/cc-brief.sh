#!/bin/sh
# scripts/cc-brief.sh CC ARGS... - `make run`'s quiet build: runs the compiler
# CC (may be several words, e.g. "ccache gcc") with ARGS after printing one
# short line saying what it makes: "  CC  build/release/edge/main.o" for a
# compile (-c), "  LD  bin/imb-edge" for a link.  Warnings and errors still
# come from the compiler itself.
cc=$1
shift
out=""
prev=""
kind=LD
for a in "$@"; do
    [ "$prev" = "-o" ] && out=$a
    [ "$a" = "-c" ] && kind=CC
    prev=$a
done
printf '  %-3s %s\n' "$kind" "$out"
# shellcheck disable=SC2086  # $cc may be a command with arguments
exec $cc "$@"
