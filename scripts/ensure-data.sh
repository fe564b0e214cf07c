#!/bin/sh
# Make Fashion-MNIST available: it comes from Debian's package dataset-fashion-mnist.
# Installs it when missing and we may (root with apt-get); otherwise says how, and fails.
set -eu
dir=/usr/share/datasets/fashion-mnist
if [ -n "${GENFORGE_DATA:-}" ] && [ -f "$GENFORGE_DATA/fashion-mnist/train-images-idx3-ubyte.gz" ]; then exit 0; fi
if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Fashion-MNIST is missing: installing Debian's dataset-fashion-mnist"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
    [ -f "$dir/train-images-idx3-ubyte.gz" ] && exit 0
fi
echo "Fashion-MNIST not found. Install it with: sudo apt-get install dataset-fashion-mnist" >&2
echo "or put the four IDX .gz files in \$GENFORGE_DATA/fashion-mnist/" >&2
exit 1
