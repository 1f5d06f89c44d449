#!/bin/sh
# Checks the systemd units with `systemd-analyze verify` in a throwaway
# root, so the check does not depend on (or change) this machine's
# /usr/bin/ffrtmp, /etc/ffrtmp or installed units.
#
#   packaging/verify-units.sh [TREE]
#
# TREE is an unpacked package (dist/stage, or `dpkg-deb -x` output); its
# units, binary and .env files are checked. Without TREE, the units and
# .env files from packaging/ are checked against a stand-in binary.
# The root also gets a copy of this machine's systemd units (for
# network-online.target, multi-user.target and the rest). Any message from
# systemd-analyze counts as a failure: it reports unknown or malformed
# settings as warnings and still exits 0.
set -eu

cd "$(dirname "$0")/.."
if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "verify-units: systemd-analyze not installed; units NOT verified" >&2
	exit 0
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/lib/systemd" "$root/usr/bin" "$root/etc/ffrtmp"
ln -s usr/lib "$root/lib"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
if [ $# -gt 0 ]; then
	cp -a "$1/lib/systemd/system/." "$root/usr/lib/systemd/system/"
	cp -a "$1/usr/bin/ffrtmp" "$root/usr/bin/ffrtmp"
	cp -a "$1/etc/ffrtmp/." "$root/etc/ffrtmp/"
else
	cp packaging/systemd/*.service "$root/usr/lib/systemd/system/"
	cp packaging/etc/*.env "$root/etc/ffrtmp/"
	printf '#!/bin/sh\n' >"$root/usr/bin/ffrtmp"
	chmod 0755 "$root/usr/bin/ffrtmp"
fi

out=$(systemd-analyze verify --man=no --root="$root" ffrtmp-server.service ffrtmp-worker.service 2>&1) && rc=0 || rc=$?
if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
	printf '%s\n' "$out" >&2
	echo "verify-units: systemd-analyze verify failed (exit $rc)" >&2
	exit 1
fi
echo "verify-units: ffrtmp-server.service and ffrtmp-worker.service verified"
