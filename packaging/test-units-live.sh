#!/bin/sh
# Runs the packaged units under a real systemd, on a machine where systemd
# is not init (a container or CI sandbox) or where it should not be touched.
#
#   sudo packaging/test-units-live.sh [dist/ffrtmp_<version>_<arch>.deb]
#
# It starts /lib/systemd/systemd as PID 1 of new PID, mount, UTS and IPC
# namespaces, with a private /run and a start target that pulls in no other
# unit (and the usual host services masked, in that private /run only), then
# inside it:
#   - installs the package (its maintainer scripts see a running systemd),
#   - installs a cluster key as docs/deployment.md says,
#   - runs three nodes on 127.0.0.11-13 (ports 17070/17071): node 1 is the
#     packaged ffrtmp-server.service with its own server.env; nodes 2 and 3
#     are copies of that unit that differ only in EnvironmentFile= and
#     StateDirectory=,
#   - checks cluster init and status, the sandbox of a running node, that
#     systemd restarts a node killed with SIGKILL and it rejoins, that a
#     stop is clean, and that `cluster leave` stops a node for good,
#   - starts a fourth node (127.0.0.15) from the packaged server.env with
#     only its addresses added: it waits to be joined until `ffrtmp
#     cluster join` makes it a voter,
#   - runs ffrtmp-worker.service with ExecStart replaced by
#     `ffrtmp dev --workers 1` (a stand-in until `ffrtmp worker` exists) to
#     check that ffmpeg works under the worker's sandbox, and that stopping
#     the unit with a job running leaves no ffmpeg behind (KillMode=mixed),
#   - purges the package.
# Every unit also gets a drop-in with DefaultDependencies=no (the test
# target has no sysinit.target) and its output in /run/ffrtmp-test/*.log.
#
# It changes the system like test-deb.sh (the package, the ffrtmp user,
# /var/lib/ffrtmp*), needs root, curl and no network, and refuses to run
# where ffrtmp is installed. Not part of CI.
set -eu

cd "$(dirname "$0")/.."
name=test-units-live
. packaging/testlib.sh
prepare "$@"

work=$(mktemp -d)
scratch=$work/out
pid1=

# The namespaces' PID 1: private /run, then systemd.
cat >"$work/init.sh" <<'EOF'
#!/bin/sh
set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/systemd/system /run/lock /run/ffrtmp-test
cd /run/systemd/system
printf '[Unit]\nDescription=ffrtmp unit test\nDefaultDependencies=no\n' >ffrtmp-test.target
for u in sysinit.target basic.target multi-user.target local-fs.target swap.target \
	remote-fs.target getty.target getty@.service serial-getty@.service console-getty.service \
	systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
	systemd-udev-trigger.service systemd-udev-settle.service systemd-sysctl.service \
	systemd-modules-load.service systemd-remount-fs.service systemd-timesyncd.service \
	systemd-networkd.service systemd-networkd-wait-online.service systemd-resolved.service \
	ifupdown-wait-online.service networking.service systemd-random-seed.service \
	systemd-binfmt.service systemd-pstore.service; do
	ln -sf /dev/null "$u"
done
exec env container=ffrtmp-test /lib/systemd/systemd --system --unit=ffrtmp-test.target
EOF
chmod 0755 "$work/init.sh"

# ns COMMAND...: runs COMMAND inside the namespaces.
ns() { nsenter -t "$pid1" -m -p -u "$@"; }
prop() { ns systemctl show -P "$2" "$1"; }

cleanup() {
	[ -n "$pid1" ] && kill -KILL "$pid1" 2>/dev/null
	sleep 1
	dpkg -P ffrtmp >/dev/null 2>&1 || true
	rm -rf /var/lib/ffrtmp-n2 /var/lib/ffrtmp-n3 /var/lib/ffrtmp-n4 /etc/ffrtmp/cluster.key "$work"
	rmdir /etc/ffrtmp 2>/dev/null || true
	forget_user
}
trap cleanup EXIT

unshare --pid --fork --mount --uts --ipc --propagation private "$work/init.sh" >"$work/systemd.log" 2>&1 &
unshare_pid=$!
# PID 1 of the namespace is the child of unshare.
for _ in $(seq 1 50); do
	pid1=$(ps -o pid= --ppid "$unshare_pid" | tr -d ' ')
	[ -n "$pid1" ] && [ "$(readlink "/proc/$pid1/exe")" = /usr/lib/systemd/systemd ] && break
	pid1=
	sleep 0.2
done
[ -n "$pid1" ] || {
	cat "$work/systemd.log" >&2
	echo "test-units-live: systemd did not start" >&2
	exit 1
}
check "systemd runs in the namespace" eventually 20 sh -c "nsenter -t $pid1 -m -p -u systemctl is-system-running | grep -qx 'running\|degraded'"

check "dpkg -i under systemd" ns dpkg -i "$deb"
check "units known to systemd, not enabled" sh -c "[ \"\$(nsenter -t $pid1 -m -p -u systemctl is-enabled ffrtmp-server ffrtmp-worker | tr '\n' ' ')\" = 'disabled disabled ' ]"

# The cluster key, as in docs/deployment.md.
ns sh -c 'umask 077; /usr/bin/ffrtmp keygen >/run/ffrtmp-test/cluster.key && install -m 0640 -o root -g ffrtmp /run/ffrtmp-test/cluster.key /etc/ffrtmp/cluster.key'

# Node settings; node 1 uses the packaged server.env.
env_for() {
	i=$1
	others=$(for j in 1 2 3; do [ "$j" = "$i" ] || printf '127.0.0.1%s:17071,' "$j"; done)
	cat <<EOF
FFRTMP_NODE_ID=n$i
FFRTMP_RAFT_ADDR=127.0.0.1$i:17071
FFRTMP_HTTP_ADDR=127.0.0.1$i:17070
FFRTMP_JOIN=${others%,}
FFRTMP_BOOTSTRAP_EXPECT=3
FFRTMP_CLUSTER_KEY_FILE=/etc/ffrtmp/cluster.key
EOF
}
env_for 1 >"$work/n1.env"
ns sh -c "cp /etc/ffrtmp/server.env /run/ffrtmp-test/server.env.packaged"
ns sh -c "cat $work/n1.env >>/etc/ffrtmp/server.env"
for i in 2 3; do
	env_for $i >"$work/n$i.env"
	ns sh -c "cp $work/n$i.env /run/ffrtmp-test/server-n$i.env && sed \
		-e 's|^EnvironmentFile=.*|EnvironmentFile=/run/ffrtmp-test/server-n$i.env|' \
		-e 's|^StateDirectory=.*|StateDirectory=ffrtmp-n$i|' \
		-e 's|^Environment=FFRTMP_DATA_DIR=.*|Environment=FFRTMP_DATA_DIR=/var/lib/ffrtmp-n$i|' \
		/lib/systemd/system/ffrtmp-server.service >/run/systemd/system/ffrtmp-server-n$i.service"
done
unit_of() { if [ "$1" = 1 ]; then echo ffrtmp-server; else echo "ffrtmp-server-n$1"; fi; }
# Node 4: the packaged settings and its own addresses, no join settings.
ns sh -c "cp /run/ffrtmp-test/server.env.packaged /run/ffrtmp-test/server-n4.env &&
	printf 'FFRTMP_NODE_ID=n4\nFFRTMP_RAFT_ADDR=127.0.0.15:17071\nFFRTMP_HTTP_ADDR=127.0.0.15:17070\n' >>/run/ffrtmp-test/server-n4.env && sed \
	-e 's|^EnvironmentFile=.*|EnvironmentFile=/run/ffrtmp-test/server-n4.env|' \
	-e 's|^StateDirectory=.*|StateDirectory=ffrtmp-n4|' \
	-e 's|^Environment=FFRTMP_DATA_DIR=.*|Environment=FFRTMP_DATA_DIR=/var/lib/ffrtmp-n4|' \
	/lib/systemd/system/ffrtmp-server.service >/run/systemd/system/ffrtmp-server-n4.service"
for u in ffrtmp-server ffrtmp-server-n2 ffrtmp-server-n3 ffrtmp-server-n4 ffrtmp-worker; do
	ns sh -c "mkdir -p /run/systemd/system/$u.service.d && printf '[Unit]\nDefaultDependencies=no\n[Service]\nStandardOutput=append:/run/ffrtmp-test/$u.log\nStandardError=append:/run/ffrtmp-test/$u.log\n' >/run/systemd/system/$u.service.d/test.conf"
done
ns systemctl daemon-reload

check "start three nodes" ns systemctl start ffrtmp-server ffrtmp-server-n2 ffrtmp-server-n3
for i in 1 2 3; do
	check "node n$i ready (GET /ready)" eventually 60 curl -fsS "http://127.0.0.1$i:17070/ready"
done

export XDG_CONFIG_HOME="$work/config"
check "cluster init" ns env XDG_CONFIG_HOME="$XDG_CONFIG_HOME" /usr/bin/ffrtmp cluster init --addr http://127.0.0.11:17070 --cluster-key-file /etc/ffrtmp/cluster.key
check "second cluster init refused" sh -c "! nsenter -t $pid1 -m -p -u env XDG_CONFIG_HOME=$XDG_CONFIG_HOME /usr/bin/ffrtmp cluster init --addr http://127.0.0.12:17070 --cluster-key-file /etc/ffrtmp/cluster.key"
cli() { ns env XDG_CONFIG_HOME="$XDG_CONFIG_HOME" /usr/bin/ffrtmp "$@"; }
check "cluster status: three healthy voters" eventually 30 sh -c "nsenter -t $pid1 -m -p -u env XDG_CONFIG_HOME=$XDG_CONFIG_HOME /usr/bin/ffrtmp cluster status -o json | grep -o '\"healthy\": *true' | wc -l | grep -qx 3"
cli cluster status || true

# The sandbox of a running node, seen from /proc.
# host_pid PID: the host's PID of the namespace's PID.
host_pid() {
	ns=$(readlink "/proc/$pid1/ns/pid")
	for d in /proc/[0-9]*; do
		[ "$(readlink "$d/ns/pid" 2>/dev/null)" = "$ns" ] || continue
		if [ "$(awk '/^NSpid:/ {print $3}' "$d/status" 2>/dev/null)" = "$1" ]; then
			echo "${d#/proc/}"
			return
		fi
	done
}
hostpid=$(host_pid "$(prop ffrtmp-server MainPID)")
check "node runs as ffrtmp, no capabilities, no new privileges, seccomp" sh -c "
	s=/proc/$hostpid/status
	grep -q '^Uid:[[:space:]]*$(id -u ffrtmp)[[:space:]]' \$s &&
	grep -q '^CapEff:[[:space:]]*0000000000000000' \$s &&
	grep -q '^CapBnd:[[:space:]]*0000000000000000' \$s &&
	grep -q '^NoNewPrivs:[[:space:]]*1' \$s &&
	grep -q '^Seccomp:[[:space:]]*2' \$s"
check "node's root file system is read-only" sh -c "grep -q ' / / ro,' /proc/$hostpid/mountinfo"

# Kill the leader with SIGKILL: systemd restarts it, it rejoins.
leader=$(cli cluster members -o json | tr -d ' \n' | sed -n 's/.*"leader":"\(n[0-9]\)".*/\1/p')
[ -n "$leader" ] || leader=n1
lu=$(unit_of "${leader#n}")
ns systemctl kill -s KILL --kill-who=main "$lu"
check "killed node $leader is restarted by systemd" eventually 30 sh -c "[ \"\$(nsenter -t $pid1 -m -p -u systemctl show -P NRestarts $lu)\" -ge 1 ] && nsenter -t $pid1 -m -p -u systemctl is-active -q $lu"
check "restarted node $leader ready again" eventually 60 curl -fsS "http://127.0.0.1${leader#n}:17070/ready"
check "three healthy voters after the restart" eventually 60 sh -c "nsenter -t $pid1 -m -p -u env XDG_CONFIG_HOME=$XDG_CONFIG_HOME /usr/bin/ffrtmp cluster status -o json | grep -o '\"healthy\": *true' | wc -l | grep -qx 3"

# A stop is clean (exit 0 on SIGTERM, well within TimeoutStopSec).
check "systemctl stop is clean" sh -c "nsenter -t $pid1 -m -p -u systemctl stop ffrtmp-server-n2 && [ \"\$(nsenter -t $pid1 -m -p -u systemctl show -P Result ffrtmp-server-n2)\" = success ]"
check "start it again" ns systemctl start ffrtmp-server-n2
check "n2 ready again" eventually 60 curl -fsS http://127.0.0.12:17070/ready

# cluster leave stops the node with exit 0: Restart=on-failure leaves it down.
check "cluster leave n3" cli cluster leave --addr http://127.0.0.13:17070
check "n3 stopped and not restarted" eventually 30 sh -c "[ \"\$(nsenter -t $pid1 -m -p -u systemctl show -P ActiveState ffrtmp-server-n3)\" = inactive ] && [ \"\$(nsenter -t $pid1 -m -p -u systemctl show -P Result ffrtmp-server-n3)\" = success ]"
check "two members after leave" eventually 30 sh -c "nsenter -t $pid1 -m -p -u env XDG_CONFIG_HOME=$XDG_CONFIG_HOME /usr/bin/ffrtmp cluster members -o json | grep -o '\"voter\": *true' | wc -l | grep -qx 2"

# A node from the packaged settings waits to be joined; `cluster join`,
# run against it as docs/deployment.md says, makes it a voter.
check "start n4 with the packaged settings" ns systemctl start ffrtmp-server-n4
check "n4 serves /health" eventually 60 curl -fsS http://127.0.0.15:17070/health
check "n4 is not ready: it waits to be joined" sh -c "curl -sS http://127.0.0.15:17070/ready | grep -q 'waiting to be joined'"
check "n4 logs the command to run" eventually 20 nsenter -t "$pid1" -m -p -u grep -q 'ffrtmp cluster join --addr http://127.0.0.15:17070' /run/ffrtmp-test/ffrtmp-server-n4.log
check "cluster join, run against n4" ns env XDG_CONFIG_HOME="$XDG_CONFIG_HOME" FFRTMP_ADDR=http://127.0.0.15:17070 /usr/bin/ffrtmp cluster join 127.0.0.11:17071
check "n4 ready" eventually 60 curl -fsS http://127.0.0.15:17070/ready
check "three voters with n4" eventually 30 sh -c "nsenter -t $pid1 -m -p -u env XDG_CONFIG_HOME=$XDG_CONFIG_HOME /usr/bin/ffrtmp cluster members -o json | grep -o '\"voter\": *true' | wc -l | grep -qx 3"

# The worker unit's sandbox with ffmpeg, through dev mode as a stand-in.
ns sh -c "printf '[Service]\nExecStart=\nExecStart=/usr/bin/ffrtmp dev --data-dir /var/lib/ffrtmp-worker --workers 1 --slots 1 --http 127.0.0.14:17070 --raft-addr 127.0.0.14:17071\nEnvironment=XDG_CONFIG_HOME=/var/lib/ffrtmp-worker/.config\n' >/run/systemd/system/ffrtmp-worker.service.d/standin.conf"
ns systemctl daemon-reload
check "worker unit starts" ns systemctl start ffrtmp-worker
check "worker stand-in ready" eventually 60 curl -fsS http://127.0.0.14:17070/ready
wcli() { ns env XDG_CONFIG_HOME=/var/lib/ffrtmp-worker/.config /usr/bin/ffrtmp "$@"; }
eventually 30 test -f /var/lib/ffrtmp-worker/.config/ffrtmp/config.json || true
job=$(wcli jobs submit --scenario 480p30-h264 --input 'testsrc://?duration=2' --output file:///unit-test.mp4 2>"$scratch" || true)
check "ffmpeg job succeeds under the worker sandbox" sh -c "[ -n '$job' ] && timeout 120 nsenter -t $pid1 -m -p -u env XDG_CONFIG_HOME=/var/lib/ffrtmp-worker/.config /usr/bin/ffrtmp jobs watch $job | grep -q '^succeeded'"
check "output written in the worker's state directory" test -s /var/lib/ffrtmp-worker/media/default/unit-test.mp4
long=$(wcli jobs submit --scenario 480p30-h264 --input 'testsrc://?duration=600' --output file:///long.mp4 2>/dev/null || true)
check "long job running" eventually 60 sh -c "nsenter -t $pid1 -m -p -u env XDG_CONFIG_HOME=/var/lib/ffrtmp-worker/.config /usr/bin/ffrtmp jobs get $long -o json | grep -q '\"state\": *\"running\"'"
check "ffmpeg runs in the worker's cgroup" sh -c 'for f in $(grep -l ffrtmp-worker.service /proc/[0-9]*/cgroup 2>/dev/null); do [ "$(cat "${f%/cgroup}/comm" 2>/dev/null)" = ffmpeg ] && exit 0; done; exit 1'
check "stopping the worker stops its ffmpeg (KillMode=mixed)" sh -c "nsenter -t $pid1 -m -p -u systemctl stop ffrtmp-worker && [ \"\$(nsenter -t $pid1 -m -p -u systemctl show -P Result ffrtmp-worker)\" = success ] && nsenter -t $pid1 -m -p -u grep -q 'job stopped' /run/ffrtmp-test/ffrtmp-worker.log"
check "no ffmpeg left in the worker's cgroup" sh -c "! grep -l 'ffrtmp-worker.service' /proc/[0-9]*/cgroup 2>/dev/null | grep -q ."

# Remove and purge under systemd.
check "dpkg -r stops the services" sh -c "nsenter -t $pid1 -m -p -u dpkg -r ffrtmp && ! nsenter -t $pid1 -m -p -u systemctl is-active -q ffrtmp-server"
check "dpkg -P" ns dpkg -P ffrtmp
check "purge removed /var/lib/ffrtmp" test ! -e /var/lib/ffrtmp

if [ "$failed" -gt 0 ]; then
	for f in ffrtmp-server ffrtmp-server-n2 ffrtmp-server-n3 ffrtmp-worker; do
		echo "--- $f.log (tail)"
		ns tail -n 20 "/run/ffrtmp-test/$f.log" 2>/dev/null || true
	done
fi
summary
