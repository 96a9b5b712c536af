#!/usr/bin/env bash
# scripts/run-unit.sh BIN... - run each unit-test binary and sum their results.
#
# Each binary prints its own "N passed, N failed" line (the last such line of
# its output counts).  Its output is shown as it runs.  This script ends with
# exactly one line "unit: N passed, N failed" and exits 1 when any test failed,
# any binary exited non-zero, crashed, timed out or printed no summary line.
# A binary that failed without reporting a failed test adds 1 to "failed", so
# the closing line never reads 0 failed for a failed run.
#
# IMB_UNIT_TIMEOUT: seconds per binary (default 300).
set -uo pipefail

timeout_s=${IMB_UNIT_TIMEOUT:-300}
total_pass=0
total_fail=0
bad=0

out=$(mktemp "${TMPDIR:-/tmp}/imb-unit.XXXXXX") || exit 1
trap 'rm -f "$out"' EXIT

if [ $# -eq 0 ]; then
    echo "run-unit.sh: no unit-test binaries given" >&2
fi

for bin in "$@"; do
    name=${bin##*/}
    if [ ! -x "$bin" ]; then
        echo "run-unit.sh: $bin: not found or not executable" >&2
        total_fail=$((total_fail + 1))
        bad=1
        continue
    fi
    case $bin in */*) cmd=$bin ;; *) cmd=./$bin ;; esac
    # stdin from /dev/null: a test must never wait for input.
    timeout -k 10 "$timeout_s" "$cmd" </dev/null 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}

    line=$(grep -Eo '[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
    if [ -n "$line" ]; then
        read -r p _ f _ <<<"${line//,/}"
    else
        p=0 f=0
    fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))

    why=""
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        why="timed out after ${timeout_s}s"
    elif [ "$rc" -gt 128 ]; then
        why="killed by signal $((rc - 128))"
    elif [ "$rc" -ne 0 ]; then
        why="exited with status $rc"
    elif [ -z "$line" ]; then
        why="printed no 'N passed, N failed' line"
    fi
    if [ -n "$why" ] || [ "$f" -gt 0 ]; then
        bad=1
        if [ -n "$why" ]; then
            echo "run-unit.sh: $name: $why" >&2
            [ "$f" -eq 0 ] && total_fail=$((total_fail + 1))
        fi
    fi
done

echo "unit: $total_pass passed, $total_fail failed"
exit "$bad"
