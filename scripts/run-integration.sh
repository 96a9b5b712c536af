#!/bin/sh
# Run the Node integration tests (tests/integration/*.test.mjs) against the
# binaries in bin/.  Installs the test dependencies (xmpp.js) first if needed.
#   scripts/run-integration.sh [extra node --test args, e.g. a test file]
# Env: IMB_TEST_LOG_LEVEL=debug   services' --log-level
#      IMB_TEST_KEEP=1            keep temp dirs (configs, logs)
#      IMB_TEST_SKIP_MISSING=1    skip (instead of fail) tests whose binaries are missing
#      IMB_TEST_BIN_DIR=DIR       binaries from DIR instead of bin/
#      IMB_TEST_XMPP=ejabberd     bridges started by startBridge() use a private ejabberd
#                                 instead of Prosody (ejabberd.test.mjs always does)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$root"

if ! command -v node >/dev/null 2>&1; then
    echo "run-integration: node not found (Node >= 20 needed)" >&2
    exit 1
fi

if [ ! -d tests/node_modules/@xmpp/client ] || [ ! -d tests/node_modules/puppeteer-core ] ||
   [ ! -d tests/node_modules/ajv ]; then
    if [ -f tests/package-lock.json ]; then
        (cd tests && npm ci --no-audit --no-fund --loglevel=error)
    else
        (cd tests && npm install --no-audit --no-fund --loglevel=error)
    fi
fi

if [ $# -eq 0 ]; then
    set -- tests/integration/
fi
# The TAP stream is kept so that a failure is named again at the very end:
# a CI log is often read from its tail.
tap=$(mktemp)
trap 'rm -f "$tap"' EXIT
status=0
{ node --test --test-concurrency=1 "$@" || echo $? >"$tap.rc"; } | tee "$tap"
if [ -f "$tap.rc" ]; then
    status=$(cat "$tap.rc")
    rm -f "$tap.rc"
    echo "# failed tests, with where and why:"
    awk '
        /^not ok / { failed = 1; print "#   " $0; left = 0; next }
        /^ok / { failed = 0 }
        failed && /^ *location:/ { print "#       " $0 }
        failed && /^ *error:/ { left = 3 }
        failed && left > 0 { print "#       " $0; left-- }
    ' "$tap" | head -60
fi
exit "$status"
