#!/usr/bin/env bash
# Builds timonel-lb (drivers/lb), the API load balancer of multi-server clusters on Docker, as
# a fully static Linux binary (it runs alone in a scratch image), and prints the binary's path.
# timonel finds it through TIMONEL_LB, beside its own executable, or on PATH.
set -euo pipefail

cd "$(dirname "$0")/.."
# The host's own target (x86_64 or aarch64 Linux), where Docker's daemon runs too.
target=$(rustc -vV | sed -n 's/^host: //p')
case "$target" in
  *-linux-gnu) ;;
  *) echo "build-lb.sh: the balancer is a Linux program; this host is $target (build it on Linux, or with a Linux cross toolchain)" >&2; exit 1 ;;
esac
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build -p timonel-lb --release --target "$target" >&2
bin="${CARGO_TARGET_DIR:-$PWD/target}/$target/release/timonel-lb"
test -x "$bin"
echo "$bin"
