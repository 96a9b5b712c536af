#!/bin/bash
# deploy/openfire/init.sh - first-start provisioning for the official Openfire
# image (igniterealtime/openfire), used as the container's command.
#
# The image's /sbin/entrypoint.sh prepares the data volume (it copies the
# stock conf/ into /var/lib/openfire/conf on first start), then runs its
# arguments: this script. It puts our openfire.xml, with its <autosetup>
# block, in place while the server is not set up yet, then hands back to the
# entrypoint with no arguments, which starts Openfire as usual. The copy is
# writable because Openfire rewrites the file when the autosetup is done.
set -euo pipefail

src=/imbridge/openfire.xml
conf=${OPENFIRE_DATA_DIR:-/var/lib/openfire}/conf
user=${OPENFIRE_USER:-openfire}

if ! grep -qs '<setup>true</setup>' "$conf/openfire.xml"; then
    echo "imbridge: provisioning Openfire from $src (autosetup)"
    mkdir -p "$conf"
    install -o "$user" -g "$user" -m 0640 "$src" "$conf/openfire.xml"
fi
exec /sbin/entrypoint.sh
