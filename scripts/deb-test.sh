#!/usr/bin/env bash
# scripts/deb-test.sh - build the Debian package (debian/) from a copy of the
# tree, lint it, and (as root) install it, check it, purge it.
#
#   scripts/deb-test.sh            (or: make deb-test)
#
# The developer's tree is never touched: the files git knows (tracked, plus
# new ones not ignored, so uncommitted work is tested too) are copied to a
# temporary directory, and `dpkg-buildpackage -us -uc -b` runs there (its
# clean step would otherwise remove bin/ and build/).
#
# Then `lintian` on the result: any error or warning fails (overrides only
# in debian/imbridge.lintian-overrides, each with its reason).
#
# As root, and when no imbridge package and no /etc/imbridge exist (this
# script installs and purges: it must not take over an operator's files), it
# installs the .deb with apt-get and checks the programs, the version, the
# system user, the units (systemd-analyze verify when it is there), the
# conffiles and --check-config on the shipped samples; then purges it and
# checks that nothing of it is left (the system user stays, as Debian does
# for every system user). Not root: it stops after lintian and says so.
#
# Needs: dpkg-dev debhelper lintian and the build dependencies in
# debian/control (scripts/deps.sh installs them). IMB_DEB_KEEP=1 keeps the
# temporary directory (its path is printed).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec </dev/null
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

say() { printf 'deb-test: %s\n' "$*"; }
fail() { printf 'deb-test: FAILED: %s\n' "$*" >&2; exit 1; }

keep=${IMB_DEB_KEEP:-}
# The checks run the services: no IMB_* of the caller's may reach them (an
# unknown one fails --check-config; a known one changes what is checked).
for v in $(compgen -v IMB_); do unset "$v"; done

start=$(date +%s)
version=$(cat VERSION)
work=$(mktemp -d "${TMPDIR:-/tmp}/imb-deb.XXXXXX")
installed=0
cleanup() {
    if [ "$installed" = 1 ]; then
        apt-get -o DPkg::Lock::Timeout=300 purge -y -q imbridge >/dev/null 2>&1 || true
    fi
    if [ "$keep" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# ---- copy the tree ----------------------------------------------------------
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || fail "not a git checkout"
src="$work/imbridge-$version"
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - | tar -xf - -C "$src"
say "copied $(cd "$src" && find . -type f | wc -l) files to $src"

# ---- build --------------------------------------------------------------------
say "dpkg-buildpackage -us -uc -b"
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
    tail -n 60 "$work/build.log"
    fail "dpkg-buildpackage (log above)"
fi
deb=$(ls "$work"/imbridge_"${version}"_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || fail "no imbridge_${version}_*.deb built"
changes=$(ls "$work"/imbridge_"${version}"_*.changes | head -n 1)
say "built $(basename "$deb") ($(stat -c %s "$deb") bytes)"
dpkg-deb --contents "$deb" | awk '{print "  " $6 $7 $8}'

# ---- lint -----------------------------------------------------------------------
say "lintian --fail-on error,warning $(basename "$changes")"
if ! lintian --fail-on error,warning --display-info --tag-display-limit 0 "$changes" \
        >"$work/lintian.log" 2>&1; then
    cat "$work/lintian.log"
    fail "lintian"
fi
grep -v '^running with root privileges' "$work/lintian.log" || true
say "lintian: no errors, no warnings"

# ---- install, check, purge ---------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    say "not root: build and lintian only (install check skipped); $(($(date +%s) - start)) s"
    exit 0
fi
if dpkg-query -W -f='${Status}' imbridge 2>/dev/null | grep -q 'ok installed'; then
    fail "an imbridge package is installed already; this test installs and purges its own"
fi
[ ! -e /etc/imbridge ] || fail "/etc/imbridge exists (make install?): not overwriting an operator's configuration"

say "apt-get install -y --no-install-recommends ./$(basename "$deb")"
installed=1
(cd "$work" && apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "./$(basename "$deb")") \
    >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "apt-get install"; }

checks=0
check() { # DESCRIPTION COMMAND...: run, count, fail with the description
    local what=$1; shift
    "$@" || fail "$what"
    checks=$((checks + 1))
    say "ok: $what"
}

out=$(imb-edge --version 2>&1) || fail "imb-edge --version exited $?"
check "imb-edge --version prints $version ($out)" grep -q -- "$version" <<<"$out"
check "imb-xmppd --version prints $version" sh -c "imb-xmppd --version 2>&1 | grep -q -- '$version'"
for p in imcat imtap; do
    check "$p --help" sh -c "$p --help >/dev/null 2>&1"
done
check "all programs on PATH in /usr/bin" test -x /usr/bin/imb-edge -a -x /usr/bin/imb-xmppd \
    -a -x /usr/bin/imcat -a -x /usr/bin/imtap -a -x /usr/bin/imb-healthcheck
check "man pages" test -f /usr/share/man/man8/imb-edge.8.gz -a -f /usr/share/man/man8/imb-xmppd.8.gz \
    -a -f /usr/share/man/man1/imcat.1.gz -a -f /usr/share/man/man1/imtap.1.gz \
    -a -f /usr/share/man/man1/imb-healthcheck.1.gz

check "sysusers.d/imbridge.conf shipped" sh -c "dpkg -L imbridge | grep -q '/sysusers.d/imbridge.conf\$'"
pw=$(getent passwd imbridge) || fail "no system user imbridge"
check "system user imbridge ($pw)" sh -c "uid=\$(id -u imbridge); [ \$uid -lt 1000 ] && getent group imbridge >/dev/null"

conffiles=$(dpkg-query -W -f='${Conffiles}\n' imbridge)
for f in edge.conf xmppd.conf filter.rules; do
    check "conffile /etc/imbridge/$f" grep -q "/etc/imbridge/$f " <<<"$conffiles"
done

units=()
for u in imb-edge imb-xmppd; do
    unit=$(dpkg -L imbridge | grep "/systemd/system/$u.service\$" || true)
    [ -n "$unit" ] || fail "no unit $u.service in the package"
    units+=("$unit")
    check "$unit runs /usr/bin/$u as imbridge" sh -c \
        "grep -q '^ExecStart=/usr/bin/$u --config /etc/imbridge/' '$unit' && grep -q '^User=imbridge\$' '$unit' && ! grep -q /usr/local '$unit'"
done
check "units installed disabled (they need a cred_key first)" sh -c \
    "! systemctl is-enabled imb-edge.service >/dev/null 2>&1 && ! systemctl is-enabled imb-xmppd.service >/dev/null 2>&1"
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify exits 0 on an unknown or misspelled key (it only warns): any
    # output fails the check.
    out=$(systemd-analyze verify "${units[@]}" 2>&1) || fail "systemd-analyze verify: $out"
    check "systemd-analyze verify ${units[*]}: no complaint" test -z "$out"
else
    say "skip: systemd-analyze is not installed"
fi

# The shipped samples are all comments (built-in defaults): they lack the
# one required value, cred_key, which belongs in /etc/imbridge/imbridge.env
# (and tls = on needs a certificate). --check-config must say so (exit 2),
# then pass once they are given, read as the service user.
run_as() { runuser -u imbridge -- "$@"; }
out=$(run_as imb-edge --config /etc/imbridge/edge.conf --check-config 2>&1) && \
    fail "imb-edge --check-config passed the sample without cred_key: $out"
check "imb-edge --check-config on the sample: exit 2, names cred_key" grep -qi cred_key <<<"$out"
key=$(openssl rand -hex 32 2>/dev/null || echo 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff)
out=$(IMB_CRED_KEY=$key run_as imb-edge --config /etc/imbridge/edge.conf --check-config 2>&1) && \
    fail "imb-edge --check-config passed tls = on without a certificate: $out"
check "imb-edge --check-config with cred_key, tls = on, no certificate: refused (tls_cert)" grep -qi tls_cert <<<"$out"
check "imb-edge --check-config with cred_key and tls = off: ok" \
    env IMB_CRED_KEY="$key" IMB_TLS=off runuser -u imbridge -- imb-edge --config /etc/imbridge/edge.conf --check-config
check "imb-xmppd --check-config with cred_key: ok" \
    env IMB_CRED_KEY="$key" runuser -u imbridge -- imb-xmppd --config /etc/imbridge/xmppd.conf --check-config

say "apt-get purge -y imbridge"
apt-get -o DPkg::Lock::Timeout=300 purge -y -q imbridge >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "purge"; }
installed=0
check "package gone" sh -c "! dpkg-query -W -f='\${Status}' imbridge 2>/dev/null | grep -q installed"
check "programs, units, man pages, /etc/imbridge gone" sh -c \
    "! ls /usr/bin/imb-edge /usr/bin/imb-healthcheck /etc/imbridge ${units[*]} /usr/share/man/man8/imb-edge.8.gz 2>/dev/null | grep -q ."
say "(the system user imbridge stays after purge, as Debian leaves every system user)"

say "passed: $checks checks, $(($(date +%s) - start)) s"
