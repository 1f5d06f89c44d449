#!/bin/sh
# Installs the ffrtmp .deb on THIS machine, checks what it installed,
# reinstalls it over itself, then removes and purges it, checking each step.
#
#   sudo packaging/test-deb.sh [dist/ffrtmp_<version>_<arch>.deb]
#
# It changes the system: it needs root, installs and purges the package,
# and creates (and at the end deletes, if it did not exist before) the
# ffrtmp user. It refuses to run where ffrtmp is already installed. It needs
# no network (the package's only dependency, adduser or systemd-sysusers,
# must already be installed). Without systemd running as init (a container,
# a CI sandbox) the maintainer scripts skip their systemctl calls; the unit
# files are still checked with systemd-analyze verify.
set -eu

cd "$(dirname "$0")/.."
name=test-deb
scratch=$(mktemp)
. packaging/testlib.sh
prepare "$@"

# stat_is PATH MODE OWNER GROUP
stat_is() {
	[ "$(stat -c '%a %U %G' "$1")" = "$2 $3 $4" ] || {
		echo "$1: $(stat -c '%a %U %G' "$1"), want $2 $3 $4"
		return 1
	}
}
# no_output COMMAND...: succeeds when COMMAND prints nothing.
no_output() {
	out=$("$@" 2>&1) || true
	[ -z "$out" ] || {
		printf '%s\n' "$out"
		return 1
	}
}

key=/etc/ffrtmp/cluster.key
cleanup() {
	dpkg -P ffrtmp >/dev/null 2>&1 || true
	rm -f "$key" "$scratch"
	rmdir /etc/ffrtmp 2>/dev/null || true
	forget_user
}
trap cleanup EXIT

echo "test-deb: $deb"

# The package itself.
check "control: name, Recommends ffmpeg" sh -c "dpkg-deb -f '$deb' Package Recommends | tr '\n' ' ' | grep -q 'Package: ffrtmp Recommends: ffmpeg'"
check "conffiles: server.env and worker.env" sh -c "[ \"\$(dpkg-deb --ctrl-tarfile '$deb' | tar -xO ./conffiles)\" = \"\$(printf '/etc/ffrtmp/server.env\n/etc/ffrtmp/worker.env')\" ]"
check "files are owned by root" sh -c "! dpkg-deb -c '$deb' | awk '{print \$2}' | grep -v '^root/root$'"

# Install.
check "dpkg -i" dpkg -i "$deb"
check "package is installed" sh -c "dpkg-query -W -f='\${Status}' ffrtmp | grep -qx 'install ok installed'"
check "dpkg --verify: files as packaged" no_output dpkg --verify ffrtmp
check "/usr/bin/ffrtmp runs" /usr/bin/ffrtmp --help
if command -v readelf >/dev/null 2>&1; then
	check "/usr/bin/ffrtmp is static (no ELF interpreter)" sh -c "! readelf -lW /usr/bin/ffrtmp | grep -q INTERP"
else
	check "/usr/bin/ffrtmp is static (ldd)" sh -c "! ldd /usr/bin/ffrtmp >/dev/null 2>&1"
fi
check "system user ffrtmp" sh -c 'u=$(getent passwd ffrtmp) && [ "$(echo "$u" | cut -d: -f3)" -lt 1000 ] && echo "$u" | grep -q ":/var/lib/ffrtmp:/usr/sbin/nologin$"'
check "group ffrtmp" getent group ffrtmp
check "/etc/ffrtmp is 0750 root:ffrtmp" stat_is /etc/ffrtmp 750 root ffrtmp
check "/var/lib/ffrtmp is 0750 ffrtmp:ffrtmp" stat_is /var/lib/ffrtmp 750 ffrtmp ffrtmp
check "/var/lib/ffrtmp-worker is 0750 ffrtmp:ffrtmp" stat_is /var/lib/ffrtmp-worker 750 ffrtmp ffrtmp
check "server.env is 0640 root:root" stat_is /etc/ffrtmp/server.env 640 root root
check "worker.env is 0640 root:root" stat_is /etc/ffrtmp/worker.env 640 root root
check "conffiles registered" sh -c "dpkg-query -W -f='\${Conffiles}' ffrtmp | grep -q /etc/ffrtmp/server.env && dpkg-query -W -f='\${Conffiles}' ffrtmp | grep -q /etc/ffrtmp/worker.env"
check "unit files installed" test -f /lib/systemd/system/ffrtmp-server.service -a -f /lib/systemd/system/ffrtmp-worker.service
check "systemd-analyze verify of the installed units" no_output systemd-analyze verify --man=no ffrtmp-server.service ffrtmp-worker.service
check "units not enabled" sh -c "! ls /etc/systemd/system/*.wants/ffrtmp-* 2>/dev/null"
check "units use the packaged paths" sh -c "grep -qx 'ExecStart=/usr/bin/ffrtmp server' /lib/systemd/system/ffrtmp-server.service && grep -qx 'ExecStart=/usr/bin/ffrtmp worker' /lib/systemd/system/ffrtmp-worker.service && grep -qx 'EnvironmentFile=/etc/ffrtmp/server.env' /lib/systemd/system/ffrtmp-server.service && grep -qx 'EnvironmentFile=/etc/ffrtmp/worker.env' /lib/systemd/system/ffrtmp-worker.service"

# The key file as deployment.md installs it: the ffrtmp user reads it
# through /etc/ffrtmp, other users do not.
check "ffrtmp keygen" sh -c "/usr/bin/ffrtmp keygen >'$key.tmp'"
install -m 0640 -o root -g ffrtmp "$key.tmp" "$key"
rm -f "$key.tmp"
check "ffrtmp user reads /etc/ffrtmp/cluster.key" runuser -u ffrtmp -- cat "$key"
check "other users cannot read /etc/ffrtmp/cluster.key" sh -c "! runuser -u nobody -- cat '$key'"
check "ffrtmp user can write its state directories" runuser -u ffrtmp -- sh -c 'touch /var/lib/ffrtmp/marker /var/lib/ffrtmp-worker/marker'

# Reinstall over itself: an edited conffile is kept, modes are kept.
echo "# local edit" >>/etc/ffrtmp/server.env
check "dpkg -i again (upgrade path)" dpkg -i "$deb"
check "edited server.env kept" grep -qx '# local edit' /etc/ffrtmp/server.env
check "/etc/ffrtmp still 0750 root:ffrtmp" stat_is /etc/ffrtmp 750 root ffrtmp
check "state kept" test -f /var/lib/ffrtmp/marker

# Remove: program gone, configuration and data kept.
check "dpkg -r" dpkg -r ffrtmp
check "binary removed" test ! -e /usr/bin/ffrtmp
check "units removed" test ! -e /lib/systemd/system/ffrtmp-server.service -a ! -e /lib/systemd/system/ffrtmp-worker.service
check "sysusers.d and tmpfiles.d entries removed" test ! -e /usr/lib/sysusers.d/ffrtmp.conf -a ! -e /usr/lib/tmpfiles.d/ffrtmp.conf
check "conffiles kept after remove" test -f /etc/ffrtmp/server.env -a -f /etc/ffrtmp/worker.env
check "data kept after remove" test -f /var/lib/ffrtmp/marker -a -f /var/lib/ffrtmp-worker/marker
check "package in config-files state" sh -c "dpkg-query -W -f='\${Status}' ffrtmp | grep -qx 'deinstall ok config-files'"

# Purge: configuration and data gone, the operator's key and the user kept.
check "dpkg -P" dpkg -P ffrtmp
check "package gone" sh -c "! dpkg-query -W -f='\${Status}' ffrtmp 2>/dev/null | grep -q ."
check "conffiles removed by purge" test ! -e /etc/ffrtmp/server.env -a ! -e /etc/ffrtmp/worker.env
check "data removed by purge" test ! -e /var/lib/ffrtmp -a ! -e /var/lib/ffrtmp-worker
check "operator's cluster.key kept by purge" test -f "$key"
check "user ffrtmp kept by purge" getent passwd ffrtmp

summary
