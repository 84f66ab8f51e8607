#!/usr/bin/env bash
# Builds the k3s stand-in (tests/k3s-standin, a test double of k3s) as a fully static
# binary, so it can run as /bin/k3s in a scratch container or on any Linux host, and
# prints the binary's path.
set -euo pipefail

cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build -p timonel-k3s-standin --release --target "$target" >&2
bin="${CARGO_TARGET_DIR:-$PWD/target}/$target/release/k3s-standin"
test -x "$bin"
echo "$bin"
