#!/bin/sh
# Fetch the pinned front-end packages of PINS from the npm registry (`npm pack`), copy the files
# the dashboard uses and each package's licence here, and check them against SHA256SUMS.
# With UPDATE=1 the sums are written afresh instead (after changing a version in PINS).
# Run by `make web-vendor`; the dashboard itself needs no build step and no network.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
licence() { echo "$1.LICENSE.txt" | sed 's|^@||; s|/|-|g'; }
trap 'rm -rf "$work"' EXIT
grep -v '^#' "$here/PINS" | while read -r package version path name; do
    [ -n "$package" ] || continue
    dir="$work/$package-$version"
    if [ ! -d "$dir" ]; then
        mkdir -p "$dir"
        (cd "$dir" && npm pack --silent "$package@$version" >/dev/null && tar xzf ./*.tgz)
    fi
    cp "$dir/package/$path" "$work/$name"
    cp "$dir/package/LICENSE" "$work/$(licence "$package")"
done
cd "$work"
names=$(grep -v '^#' "$here/PINS" | while read -r package _ _ name; do
    [ -n "$package" ] && echo "$name" && licence "$package"
done | sort -u)
if [ "${UPDATE:-}" = 1 ]; then
    # shellcheck disable=SC2086
    sha256sum $names >"$here/SHA256SUMS"
else
    sha256sum -c --quiet "$here/SHA256SUMS"
fi
# shellcheck disable=SC2086
cp $names "$here/"
echo "web-vendor: $(echo "$names" | wc -l) files in $here match SHA256SUMS"
