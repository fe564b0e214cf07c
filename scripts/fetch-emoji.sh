#!/bin/sh
# Install genforge's named dataset `emoji`: 3,786 Noto colour emoji at 64x64 from the npm package
# emoji-datasource-google@16.0.0. A set-up step; training never downloads anything.
#
# It keeps what genforge reads (img/google/64/*.png, emoji.json) and the package's LICENSE,
# package.json and README.md (the README is where the Noto images' Apache-2.0 licence is stated),
# in the first folder genforge searches for the name (src/genforge/data/named.py, search_dirs):
#   ${GENFORGE_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/genforge/data}/emoji
# Idempotent: a complete copy in any searched folder is kept. Atomic: the package is unpacked
# into a hidden folder beside the target and renamed into place after the image count is checked.
set -eu
package=emoji-datasource-google@16.0.0
expected=3786
root=${GENFORGE_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/genforge/data}
dest=$root/emoji

count_images() {
    find "$1/img/google/64" -maxdepth 1 -type f -name '*.png' 2>/dev/null | wc -l | tr -d ' '
}

complete() {
    [ -f "$1/emoji.json" ] && [ "$(count_images "$1")" = "$expected" ]
}

# the same places, in the same order, as named.search_dirs
for place in ${GENFORGE_DATA:+"$GENFORGE_DATA/emoji"} "${XDG_CACHE_HOME:-$HOME/.cache}/genforge/data/emoji" \
    /usr/share/datasets/emoji; do
    if complete "$place"; then
        echo "emoji: found in $place ($expected images)"
        exit 0
    fi
done
if [ -e "$dest" ]; then
    echo "emoji: $dest exists but is not a complete copy ($(count_images "$dest") of $expected images);" \
        "remove it and run $0 again" >&2
    exit 1
fi

if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "emoji: npm is missing: installing Debian's npm"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
    else
        echo "emoji: npm is needed to fetch $package; install Node.js with npm" \
            "(e.g. sudo apt-get install npm) and run $0 again" >&2
        exit 1
    fi
fi

mkdir -p "$root"
download=$(mktemp -d)
stage=$(mktemp -d "$root/.emoji.XXXXXX") # beside the target, so the final rename stays on one filesystem
trap 'rm -rf "$download" "$stage"' EXIT
echo "emoji: fetching $package with npm"
(cd "$download" && npm pack --silent "$package" >/dev/null)
tarball=$(find "$download" -maxdepth 1 -name '*.tgz' | head -n 1)
if [ -z "$tarball" ]; then
    echo "emoji: npm pack $package produced no tarball" >&2
    exit 1
fi
tar -xzf "$tarball" -C "$stage" --no-same-owner --strip-components=1 \
    package/img/google/64 package/emoji.json package/LICENSE package/package.json package/README.md
if ! complete "$stage"; then
    echo "emoji: $package unpacked $(count_images "$stage") images, expected $expected; not installed" >&2
    exit 1
fi
chmod 755 "$stage" # mktemp made it private; the data is for every user of this folder
if [ -e "$dest" ]; then # another run finished first: keep its copy
    echo "emoji: $dest appeared meanwhile; keeping it"
    exit 0
fi
mv "$stage" "$dest"
echo "emoji: installed $expected images in $dest"
