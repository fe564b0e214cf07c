#!/bin/sh
# Make genforge's named datasets available: scripts/ensure-data.sh [fashion-mnist|emoji|all]
# (default all).
#   fashion-mnist  from Debian's package dataset-fashion-mnist; installed when missing and we may
#                  (root with apt-get), otherwise says how, and fails.
#   emoji          from the npm package emoji-datasource-google, by scripts/fetch-emoji.sh.
set -eu
here=$(dirname "$0")

fashion_mnist() {
    dir=/usr/share/datasets/fashion-mnist
    if [ -n "${GENFORGE_DATA:-}" ] && [ -f "$GENFORGE_DATA/fashion-mnist/train-images-idx3-ubyte.gz" ]; then return 0; fi
    if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then return 0; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "Fashion-MNIST is missing: installing Debian's dataset-fashion-mnist"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
        [ -f "$dir/train-images-idx3-ubyte.gz" ] && return 0
    fi
    echo "Fashion-MNIST not found. Install it with: sudo apt-get install dataset-fashion-mnist" >&2
    echo "or put the four IDX .gz files in \$GENFORGE_DATA/fashion-mnist/" >&2
    exit 1
}

case "${1:-all}" in
fashion-mnist) fashion_mnist ;;
emoji) sh "$here/fetch-emoji.sh" ;;
all)
    fashion_mnist
    sh "$here/fetch-emoji.sh"
    ;;
*)
    echo "usage: $0 [fashion-mnist|emoji|all]  (default all)" >&2
    exit 2
    ;;
esac
