#!/bin/sh
# Make headless Chromium available for the report's browser test (tests/test_report_browser.py).
# Installs Debian's chromium when it is missing and we may (root with apt-get); otherwise says how, and fails.
set -eu
if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Chromium is missing: installing Debian's chromium"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    [ -x /usr/bin/chromium ] && exit 0
fi
echo "Chromium not found. Install it with: sudo apt-get install chromium" >&2
exit 1
