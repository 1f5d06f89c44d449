# Helpers of packaging/test-deb.sh and packaging/test-units-live.sh, which
# source this file from the repository root. They set $name (the script's
# name, for messages) and $scratch (a file for a failed check's output).

passed=0
failed=0

# prepare [DEB]: refuses to run unless root and ffrtmp is not installed;
# sets $deb to DEB or to the one dist/ffrtmp_*_<arch>.deb, and $had_user
# to whether the ffrtmp user exists now.
prepare() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "$name: must run as root (it installs and purges the package)" >&2
		exit 2
	fi
	deb=${1:-}
	if [ -z "$deb" ]; then
		arch=$(dpkg --print-architecture)
		set -- dist/ffrtmp_*_"$arch".deb
		if [ ! -f "$1" ] || [ $# -ne 1 ]; then
			echo "$name: want exactly one dist/ffrtmp_*_$arch.deb; run make package or name the file" >&2
			exit 2
		fi
		deb=$1
	fi
	deb=$(realpath "$deb")
	if dpkg-query -W -f='${Status}' ffrtmp 2>/dev/null | grep -q 'installed\|config-files'; then
		echo "$name: ffrtmp is already installed here; not touching it" >&2
		exit 2
	fi
	had_user=no
	if getent passwd ffrtmp >/dev/null; then had_user=yes; fi
}

# forget_user deletes the ffrtmp user and group if prepare did not find them.
forget_user() {
	if [ "$had_user" = no ] && getent passwd ffrtmp >/dev/null; then
		userdel ffrtmp 2>/dev/null || true
		groupdel ffrtmp 2>/dev/null || true
	fi
}

ok() {
	passed=$((passed + 1))
	echo "ok   $1"
}

bad() {
	failed=$((failed + 1))
	echo "FAIL $1"
}

# check DESCRIPTION COMMAND...: runs COMMAND, counts the result, and shows
# COMMAND's output if it failed.
check() {
	d=$1
	shift
	if "$@" >"$scratch" 2>&1; then ok "$d"; else
		bad "$d"
		sed 's/^/     /' "$scratch"
	fi
}

# eventually SECONDS COMMAND...: retries COMMAND once a second until it
# succeeds or SECONDS have passed.
eventually() {
	n=$1
	shift
	while ! "$@" >/dev/null 2>&1; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || return 1
		sleep 1
	done
}

# summary prints the closing count and fails if any check failed.
summary() {
	echo "$name: $passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}
