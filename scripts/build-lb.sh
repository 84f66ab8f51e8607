#!/usr/bin/env bash
# Builds timonel-lb (drivers/lb), the API load balancer of multi-server clusters on Docker, as
# a fully static Linux binary (it runs alone in a scratch image), and prints the binary's path.
# timonel finds it through TIMONEL_LB, beside its own executable, or on PATH.
set -euo pipefail

cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build -p timonel-lb --release --target "$target" >&2
bin="${CARGO_TARGET_DIR:-$PWD/target}/$target/release/timonel-lb"
test -x "$bin"
echo "$bin"
