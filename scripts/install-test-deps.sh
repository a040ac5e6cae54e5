#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, and nothing if it is all there:
# opentracker, python3-libtorrent, aria2 (benchmark), chromium + chromium-driver (browser tests),
# npm's bittorrent-tracker (an IPv6 tracker) and the wasm32-unknown-unknown Rust target (rustup
# does not add it by itself here).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi

missing=()
for pkg in opentracker python3-libtorrent aria2 chromium chromium-driver; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done
# The package can be registered yet its module unusable (a removed file, a broken install).
if [[ ! " ${missing[*]} " == *" python3-libtorrent "* ]] &&
    ! /usr/bin/python3 -c 'import libtorrent' >/dev/null 2>&1; then
    missing+=(python3-libtorrent)
fi

if ((${#missing[@]})); then
    echo "install-test-deps: installing ${missing[*]}"
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q "${missing[@]}"
fi

for cmd in /usr/bin/opentracker aria2c chromium chromedriver; do
    command -v "$cmd" >/dev/null || { echo "install-test-deps: $cmd is missing" >&2; exit 1; }
done
/usr/bin/python3 -c 'import libtorrent' ||
    { echo "install-test-deps: /usr/bin/python3 cannot import libtorrent" >&2; exit 1; }

# An IPv6 tracker (Debian's opentracker is IPv4-only): npm's bittorrent-tracker, server part only.
# --ignore-scripts: its WebRTC dependency would download a prebuilt binary, which is not needed.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "install-test-deps: installing nodejs and npm"
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q nodejs npm
fi
node_dir="$(dirname "$0")/../tests/node"
if [[ ! -d "$node_dir/node_modules/bittorrent-tracker" ]]; then
    echo "install-test-deps: installing the IPv6 test tracker (npm bittorrent-tracker)"
    npm ci --prefix "$node_dir" --ignore-scripts --no-audit --no-fund
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "install-test-deps: adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
fi
echo "install-test-deps: all present"
