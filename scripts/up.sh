#!/usr/bin/env bash
# One command from a fresh Debian or Ubuntu machine to a running cluster:
#
#   scripts/up.sh [timonel start flags...]
#
# It installs what is missing (Docker, a C toolchain, Rust through the distribution's packages
# when no cargo is on PATH) — as root, or through sudo — starts the Docker daemon when none
# answers (no systemd needed), builds timonel in release mode, and runs
# `timonel start` with the arguments given. Everything it does is said on stderr; what it
# cannot do (not Debian/Ubuntu, no root and no sudo) is refused with the reason.
#
# Environment:
#   TIMONEL_UP_SKIP_INSTALL=1   do not install packages (they are there, or you manage them)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

say() { printf 'up: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "installing needs root: run as root, install sudo, or install the packages yourself and set TIMONEL_UP_SKIP_INSTALL=1"
    fi
}

missing=()
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
if ! command -v cargo >/dev/null 2>&1; then
    # Debian 12's `cargo` is too old for timonel; its `cargo-web` is current.
    if apt-cache show cargo-web >/dev/null 2>&1; then
        missing+=(cargo-web rustc-web)
    else
        missing+=(cargo rustc)
    fi
fi
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)

if [ ${#missing[@]} -gt 0 ] && [ "${TIMONEL_UP_SKIP_INSTALL:-}" != 1 ]; then
    command -v apt-get >/dev/null 2>&1 ||
        die "this machine has no apt-get (not Debian/Ubuntu): install ${missing[*]} yourself, then run this again with TIMONEL_UP_SKIP_INSTALL=1"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    say "starting the Docker daemon"
    as_root env TIMONEL_DOCKERD_PIDFILE="${TIMONEL_DOCKERD_PIDFILE:-/tmp/timonel-dockerd.pid}" \
        "$here/start-docker.sh" ||
        die "the Docker daemon did not start (its log says why: /var/log/timonel-dockerd.log)"
    docker info >/dev/null 2>&1 ||
        die "the Docker daemon runs but this user cannot reach it: add yourself to the docker group (\`sudo usermod -aG docker $USER\`, then log in again) or run as root"
fi

need=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
    die "timonel needs Rust $need or newer and this machine has $have: install a current toolchain with rustup (https://rustup.rs), then run this again"
fi

say "building timonel (release)"
(cd "$root" && cargo build --release --quiet --bin timonel)

# Clusters with several servers (--control-planes) get a load balancer in front of their API,
# a static program timonel finds beside itself.
say "building the API load balancer (timonel-lb, static)"
if lb=$("$here/build-lb.sh" 2>/dev/null); then
    cp "$lb" "$root/target/release/timonel-lb"
else
    say "timonel-lb could not be built (scripts/build-lb.sh says why): clusters with one server work, --control-planes above 1 is refused"
fi

say "timonel start $*"
exec "$root/target/release/timonel" start "$@"
