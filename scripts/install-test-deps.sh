#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, and nothing if it is all there:
# opentracker, python3-libtorrent, aria2 (benchmark), chromium + chromium-driver (browser tests),
# and the wasm32-unknown-unknown Rust target (rustup does not add it by itself here).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

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
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q "${missing[@]}"
fi

for cmd in /usr/bin/opentracker aria2c chromium chromedriver; do
    command -v "$cmd" >/dev/null || { echo "install-test-deps: $cmd is missing" >&2; exit 1; }
done
/usr/bin/python3 -c 'import libtorrent' ||
    { echo "install-test-deps: /usr/bin/python3 cannot import libtorrent" >&2; exit 1; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "install-test-deps: adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
fi
echo "install-test-deps: all present"
