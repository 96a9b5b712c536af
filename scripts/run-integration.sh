#!/bin/sh
# Run the Node integration tests (tests/integration/*.test.mjs) against the
# binaries in bin/.  Installs the test dependencies (xmpp.js) first if needed.
#   scripts/run-integration.sh [extra node --test args, e.g. a test file]
# Env: IMB_TEST_LOG_LEVEL=debug   services' --log-level
#      IMB_TEST_KEEP=1            keep temp dirs (configs, logs)
#      IMB_TEST_SKIP_MISSING=1    skip (instead of fail) tests whose binaries are missing
#      IMB_TEST_BIN_DIR=DIR       binaries from DIR instead of bin/
set -eu

root=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$root"

if ! command -v node >/dev/null 2>&1; then
    echo "run-integration: node not found (Node >= 20 needed)" >&2
    exit 1
fi

if [ ! -d tests/node_modules/@xmpp/client ]; then
    if [ -f tests/package-lock.json ]; then
        (cd tests && npm ci --no-audit --no-fund --loglevel=error)
    else
        (cd tests && npm install --no-audit --no-fund --loglevel=error)
    fi
fi

if [ $# -eq 0 ]; then
    set -- tests/integration/
fi
status=0
node --test --test-concurrency=1 "$@" || status=$?
exit $status
