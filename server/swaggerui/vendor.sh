#!/usr/bin/env bash
# vendor.sh VERSION INTEGRITY: refreshes the Swagger UI files that the
# server embeds (GET /v1/docs) from the npm package swagger-ui-dist at
# VERSION, after checking the tarball against INTEGRITY (its npm sha512
# integrity string). `make swagger-ui` calls it with the pinned values.
set -euo pipefail
version=${1:?usage: vendor.sh VERSION INTEGRITY}
integrity=${2:?usage: vendor.sh VERSION INTEGRITY}
dir=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

npm pack --silent --pack-destination "$tmp" "swagger-ui-dist@$version" >/dev/null
tgz="$tmp/swagger-ui-dist-$version.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [ "$got" != "$integrity" ]; then
	echo "swagger-ui-dist $version: integrity $got, want $integrity" >&2
	exit 1
fi
# Only what the page loads, and the licenses.
files=(LICENSE NOTICE swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css)
tar -xzf "$tgz" -C "$tmp" "${files[@]/#/package/}"
for f in "${files[@]}"; do
	install -m 0644 "$tmp/package/$f" "$dir/$f"
done
printf 'swagger-ui-dist %s %s\n' "$version" "$integrity" >"$dir/VERSION"
echo "vendored swagger-ui-dist $version into $dir"
