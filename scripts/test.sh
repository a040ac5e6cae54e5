#!/usr/bin/env bash
# The project's test command (README "Test"; .ci/run runs exactly this). Works on a fresh machine
# of the project's kind: installs the Debian packages and the wasm32 target first, then checks
# formatting and lints, builds the protocol crate for the browser, builds the release bridge that
# the end-to-end tests drive, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "install test dependencies"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "protocol builds for wasm32-unknown-unknown"
cargo build -p protocol --target wasm32-unknown-unknown

step "release bridge for the end-to-end tests"
cargo build --release -p bridge
target_dir=$(cargo metadata --format-version 1 --no-deps |
    /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export BRIDGE_BIN="$target_dir/release/bridge"

# Two cores: two tests at a time (each end-to-end test runs a seeder and the bridge).
step "tests"
if command -v cargo-nextest >/dev/null; then
    # Doc-tests first: nextest's summary must be the run's closing line.
    cargo test --workspace --doc
    cargo nextest run --workspace --test-threads 2 --no-fail-fast
else
    cargo test --workspace --no-fail-fast -- --test-threads 2
fi
