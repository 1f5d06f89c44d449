#!/bin/sh
# Builds dist/ffrtmp_<version>_<arch>.deb with dpkg-deb: the static ffrtmp
# binary, the systemd units, the example configuration (as conffiles), the
# load balancer examples, the sysusers.d and tmpfiles.d entries and the
# maintainer scripts. Needs no
# network beyond what `go build` needs (the module cache) and no root.
# Run by `make package`; the environment may set VERSION (default: git
# describe), GOARCH (default: go env GOARCH), GO (default: go) and
# MAINTAINER (the control file's Maintainer field).
set -eu

cd "$(dirname "$0")/.."
GO=${GO:-go}
MAINTAINER=${MAINTAINER:-ffrtmp maintainers <maintainers@ffrtmp.invalid>}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo 0.0.0)}
GOARCH=${GOARCH:-$($GO env GOARCH)}

# Debian architecture names for Go's.
case "$GOARCH" in
amd64 | arm64 | s390x | riscv64 | loong64) ARCH=$GOARCH ;;
386) ARCH=i386 ;;
arm) ARCH=armhf GOARM=${GOARM:-7} && export GOARM ;;
ppc64le) ARCH=ppc64el ;;
mips64le) ARCH=mips64el ;;
mipsle) ARCH=mipsel ;;
*) echo "build-deb: no Debian architecture for GOARCH=$GOARCH" >&2 && exit 1 ;;
esac

# A Debian upstream version has only [A-Za-z0-9.+~] and starts with a digit:
# v1.2.0 -> 1.2.0, v1.2.0-rc1 -> 1.2.0~rc1 (sorts before 1.2.0),
# v1.2.0-3-gabc1234-dirty -> 1.2.0+3+gabc1234+dirty, and an untagged
# abc1234 -> 0.0.0+gabc1234.
debversion() {
	v=${1#v}
	case "$v" in
	[0-9]*.*) ;; # a tag (a commit hash has no dot)
	*) v="0.0.0+g$v" ;;
	esac
	printf '%s\n' "$v" | sed -e 's/^\([0-9.]*\)-\(rc\|alpha\|beta\)/\1~\2/' -e 's/[^A-Za-z0-9.+~]/+/g'
}
DEBVERSION=$(debversion "$VERSION")

out=dist/ffrtmp_${DEBVERSION}_${ARCH}.deb
stage=dist/stage
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"

# The binary: static (no cgo), no local paths, version stamped in.
CGO_ENABLED=0 GOARCH=$GOARCH $GO build -trimpath \
	-ldflags "-s -w -X main.version=$VERSION" \
	-o "$stage/usr/bin/ffrtmp" .
chmod 0755 "$stage/usr/bin/ffrtmp"

install -d -m 0755 "$stage/lib/systemd/system" "$stage/etc/ffrtmp" \
	"$stage/usr/lib/sysusers.d" "$stage/usr/lib/tmpfiles.d" \
	"$stage/usr/share/doc/ffrtmp/examples/haproxy" "$stage/usr/share/doc/ffrtmp/examples/nginx"
install -m 0644 packaging/systemd/ffrtmp-server.service packaging/systemd/ffrtmp-worker.service \
	"$stage/lib/systemd/system/"
# The .env files may come to hold settings an operator considers private.
install -m 0640 packaging/etc/server.env packaging/etc/worker.env "$stage/etc/ffrtmp/"
install -m 0644 packaging/sysusers.d/ffrtmp.conf "$stage/usr/lib/sysusers.d/ffrtmp.conf"
install -m 0644 packaging/tmpfiles.d/ffrtmp.conf "$stage/usr/lib/tmpfiles.d/ffrtmp.conf"
install -m 0644 docs/deployment.md README.md "$stage/usr/share/doc/ffrtmp/"
# Load balancer configurations (docs/deployment.md), as examples: they
# belong to other packages' configuration directories once adapted.
install -m 0644 packaging/haproxy/ffrtmp.cfg "$stage/usr/share/doc/ffrtmp/examples/haproxy/"
install -m 0644 packaging/nginx/ffrtmp.conf "$stage/usr/share/doc/ffrtmp/examples/nginx/"

install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$stage/DEBIAN/"
printf '/etc/ffrtmp/server.env\n/etc/ffrtmp/worker.env\n' >"$stage/DEBIAN/conffiles"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: ffrtmp
Version: $DEBVERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $size
Depends: adduser | systemd-sysusers
Recommends: ffmpeg
Section: video
Priority: optional
Description: clustered FFmpeg job platform
 ffrtmp runs FFmpeg transcoding and live RTMP jobs for many tenants on a
 cluster of machines. One static binary is the control-plane node (a Raft
 member with an HTTP API), the FFmpeg worker and the command line client.
 .
 The package installs the binary, systemd units for a node
 (ffrtmp-server) and a worker (ffrtmp-worker), example configuration in
 /etc/ffrtmp and the ffrtmp system user. It enables no service. ffmpeg is
 needed on worker hosts only.
CONTROL

# Reproducible timestamps: the time of the commit.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# The units as packaged must pass systemd-analyze verify.
packaging/verify-units.sh "$stage"

rm -f dist/ffrtmp_*_"$ARCH".deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null

rm -rf "$stage"
echo "$out"
