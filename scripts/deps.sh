#!/bin/sh
# scripts/deps.sh - install the Debian 12 (bookworm) packages imbridge needs to
# build, test and run, if any are missing.
#
# Fast path: when everything is present it prints nothing and exits 0 (one
# dpkg-query call).  Otherwise, as root it runs apt-get update + install; as
# another user it uses `sudo -n` when that works, or prints the exact command
# to run and exits 1.
#
# chromium is for the browser test (tests/integration/browser.test.mjs); the
# browser page's converse.js comes from npm, installed by scripts/run-local.sh.
# groff-base renders the man pages (tests/integration/manpages.test.mjs).
# debhelper, lintian and dpkg-dev build and check the Debian package
# (make deb-test, scripts/deb-test.sh).
# clang is optional: it is added when IMB_DEPS_CLANG=1 or when $CC names clang
# (`make CC=clang test` exports CC).  IMB_DEPS_EXTRA="pkg ..." adds more.
# node/npm may come from outside Debian (e.g. NodeSource, whose nodejs package
# conflicts with Debian's npm), so they are checked with `command -v` and only
# their missing halves are installed from Debian.
set -eu

pkgs="build-essential pkg-config libevent-dev libhiredis-dev libstrophe-dev
libjansson-dev libyajl-dev libssl-dev libidn-dev libedit-dev openssl redis-server prosody prosody-modules lua-unbound ejabberd haproxy docker-compose
prometheus chromium groff-base debhelper lintian dpkg-dev"

cc_name=${CC:-cc}
case "${IMB_DEPS_CLANG:-}:${cc_name##*/}" in
    1:*|*:clang*) pkgs="$pkgs clang" ;;
esac
pkgs="$pkgs ${IMB_DEPS_EXTRA:-}"

# Packages whose status is not exactly "install ok installed" are missing.
# dpkg-query exits 1 and complains on stderr for names it never heard of; those
# lines are simply absent from its output, so the loop below catches them too.
status=$(dpkg-query -W -f='${Package} ${Status}\n' $pkgs 2>/dev/null || true)
missing=""
for p in $pkgs; do
    case "
$status
" in
        *"
$p install ok installed
"*) ;;
        *) missing="$missing $p" ;;
    esac
done
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

[ -z "$missing" ] && exit 0
missing=${missing# }

apt="apt-get -o DPkg::Lock::Timeout=300"
echo "deps.sh: installing missing packages: $missing" >&2
if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
else
    echo "deps.sh: not root and no password-less sudo; run this, then retry:" >&2
    echo "  sudo apt-get update && sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing" >&2
    exit 1
fi

# shellcheck disable=SC2086  # word splitting of $sudo, $apt, $missing is wanted
$sudo env DEBIAN_FRONTEND=noninteractive $apt update -q </dev/null
# shellcheck disable=SC2086
$sudo env DEBIAN_FRONTEND=noninteractive $apt install -y -q --no-install-recommends $missing </dev/null
