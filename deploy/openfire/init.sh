#!/bin/bash
# deploy/openfire/init.sh - first-start provisioning for the official Openfire
# image (igniterealtime/openfire, pinned in docker-compose.yml), used as the
# container's command.
#
# How the image starts (its build/docker/entrypoint.sh at tag v4.8.3): the
# entrypoint, as root, links $OPENFIRE_DIR/{conf,plugins} to the data volume
# ($OPENFIRE_DATA_DIR, /var/lib/openfire), copies the stock conf/ and
# plugins/ there on the first start, then runs its arguments: this script.
# We
#   1. put our openfire.xml, with its <autosetup> block, in place while the
#      server is not set up yet (the copy is writable: Openfire rewrites the
#      file when the autosetup is done);
#   2. install the plugins listed in plugins.txt (Monitoring for the message
#      archive, Push Notification) into the volume's plugins/ directory,
#      where Openfire deploys every jar it finds at start (plugin developer
#      guide: "Plugins live in the plugins directory of openfireHome. When a
#      plugin is deployed as a JAR or WAR file, it is automatically
#      expanded"). A jar already there is kept, so later starts need no
#      network;
#   3. hand back to the entrypoint with no arguments, which starts Openfire.
# The image's own mechanism (jars mounted at /opt/plugins are copied in with
# `cp -n`) would need the jars on the host; downloading here keeps
# `docker-compose up` self-contained.
set -euo pipefail

here=/imbridge
data=${OPENFIRE_DATA_DIR:-/var/lib/openfire}
conf=$data/conf
plugins=$data/plugins
user=${OPENFIRE_USER:-openfire}

if ! grep -qs '<setup>true</setup>' "$conf/openfire.xml"; then
    echo "imbridge: provisioning Openfire from $here/openfire.xml (autosetup)"
    mkdir -p "$conf"
    install -o "$user" -g "$user" -m 0640 "$here/openfire.xml" "$conf/openfire.xml"
fi

# fetch URL FILE: curl or wget (the image is built on openjdk's Debian
# images, which carry both; either is enough).
fetch() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 3 --max-time 120 -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -T 120 -t 3 -O "$2" "$1"
    else
        echo "imbridge: neither curl nor wget in this image: put $(basename "$2") in $plugins by hand" >&2
        return 1
    fi
}

mkdir -p "$plugins"
while read -r name version sha url; do
    case $name in "" | "#"*) continue ;; esac
    jar=$plugins/$name.jar
    if [ -e "$jar" ] || [ -d "$plugins/$name" ]; then
        continue
    fi
    echo "imbridge: installing Openfire plugin $name $version from $url"
    tmp=$(mktemp "$plugins/.$name.XXXXXX")
    if ! fetch "$url" "$tmp"; then
        rm -f "$tmp"
        echo "imbridge: could not download $name: Openfire starts without it" >&2
        continue
    fi
    got=$(sha256sum "$tmp" | cut -d' ' -f1)
    if [ "$sha" = "-" ]; then
        echo "imbridge: $name $version sha256 $got (not pinned: pin it in deploy/openfire/plugins.txt)"
    elif [ "$got" != "$sha" ]; then
        rm -f "$tmp"
        echo "imbridge: $name $version: sha256 $got, expected $sha: NOT installed" >&2
        exit 1
    fi
    chown "$user:$user" "$tmp"
    chmod 0644 "$tmp"
    mv "$tmp" "$jar"
done < "$here/plugins.txt"

exec /sbin/entrypoint.sh
