#!/usr/bin/env bash
# The project's test command (README: "Test it"). It installs what the tests need when it may
# (root, or CI=true), starts dockerd and libvirtd if they are not running (no systemd needed),
# stops what it started when it exits, then runs: cargo fmt --check, clippy -D warnings, and the
# whole test suite including the integration tests against the real daemons, and the Windows
# lane (timonel.exe under Wine, scripts/test-windows.sh; TIMONEL_SKIP_WINDOWS=1 skips it).
#
# Under CI=true a test that needs a daemon FAILS when the daemon is missing; elsewhere it skips
# with a printed reason.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

log() { printf '\n==> %s\n' "$*" >&2; }

# Debian packages the tests use: daemons, libvirt headers for the kvm helper, the tools that
# build the test VM image and the SSH test hosts, OpenSSH's client (ssh-agent, ssh), and what
# the simulators' QEMU backings use for their guests' networks (dnsmasq, iptables).
packages=(docker.io libvirt-daemon-system libvirt-dev pkg-config qemu-system-x86 qemu-utils
          debootstrap fdisk grub-pc-bin grub2-common e2fsprogs busybox-static openssh-client
          podman golang-github-containernetworking-plugin-dnsname uidmap curl dnsmasq-base
          iptables)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] || [ "${CI:-}" = true ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # A machine may carry a newer qemu-utils (from backports) than the distribution's
    # qemu-system-x86, which refuses to install beside it: take the qemu-utils that matches.
    for i in "${!missing[@]}"; do
      if [ "${missing[$i]}" = qemu-system-x86 ]; then
        qv=$(apt-cache policy qemu-system-x86 | awk '/Candidate/{print $2}')
        [ -n "$qv" ] && missing+=("qemu-utils=$qv")
      fi
    done
    apt-get install -y -qq --no-install-recommends --allow-downgrades "${missing[@]}" >/dev/null
  else
    log "not installing ${missing[*]} (not root): the tests that need them will skip or fail"
  fi
fi

# Stop, at exit, the daemons this run started (and only those).
pidfile="${TIMONEL_DOCKERD_PIDFILE:-${TMPDIR:-/tmp}/timonel-dockerd.pid}"
libvirt_was_running=false
pgrep -x libvirtd >/dev/null 2>&1 && libvirt_was_running=true
podman_pidfile="${TIMONEL_PODMAN_PIDFILE:-${TMPDIR:-/tmp}/timonel-podman.pid}"
rootless_pidfile="${TMPDIR:-/tmp}/timonel-podman-rootless.pid"
cleanup() {
  for f in "$podman_pidfile" "$rootless_pidfile"; do
    if [ -f "$f.ours" ]; then
      log "stopping the Podman service this run started ($f)"
      kill "$(cat "$f.ours")" 2>/dev/null || true
      rm -f "$f" "$f.ours"
    fi
  done
  if [ -f "$pidfile.ours" ]; then
    log "stopping the dockerd this run started"
    kill "$(cat "$pidfile.ours")" 2>/dev/null || true
    rm -f "$pidfile" "$pidfile.ours"
  fi
  if [ "$libvirt_was_running" = false ] && pgrep -x libvirtd >/dev/null 2>&1; then
    log "stopping the libvirtd this run started"
    pkill -x libvirtd || true
    pkill -x virtlogd || true
  fi
}
trap cleanup EXIT

if docker info >/dev/null 2>&1; then
  rm -f "$pidfile.ours"
elif "$here/start-docker.sh"; then
  # start-docker.sh wrote the PID file: this run started the daemon, so this run stops it.
  [ -f "$pidfile" ] && cp "$pidfile" "$pidfile.ours"
else
  log "dockerd could not be started: the Docker tests will fail under CI=true"
fi
# Podman's Docker-compatible API, for the Podman lane (tests/e2e_podman.rs).
podman_socket="${TIMONEL_PODMAN_SOCKET:-/run/podman/podman.sock}"
if curl -fsS --max-time 2 --unix-socket "$podman_socket" http://podman/_ping >/dev/null 2>&1; then
  rm -f "$podman_pidfile.ours"
elif "$here/start-podman.sh" "unix://$podman_socket"; then
  [ -f "$podman_pidfile" ] && cp "$podman_pidfile" "$podman_pidfile.ours"
else
  log "Podman's service could not be started: the Podman test will fail under CI=true"
fi
# Rootless Podman, as the user timonel-podman (created when missing; root only).
if [ "$(id -u)" = 0 ]; then
  rootless_was_up=false
  [ -f "$rootless_pidfile" ] && kill -0 "$(cat "$rootless_pidfile")" 2>/dev/null && rootless_was_up=true
  if address=$(TIMONEL_PODMAN_PIDFILE="$rootless_pidfile" "$here/start-podman.sh" --rootless timonel-podman); then
    export TIMONEL_PODMAN_ROOTLESS_SOCKET="${address#unix://}"
    [ "$rootless_was_up" = false ] && [ -f "$rootless_pidfile" ] && cp "$rootless_pidfile" "$rootless_pidfile.ours"
  else
    log "rootless Podman could not be started: the rootless Podman test will fail under CI=true"
  fi
fi
"$here/start-libvirt.sh" || log "libvirtd could not be started: the libvirt tests will fail under CI=true"

# The bootable test VM image for the libvirt tests (debootstrap; cached by the script's hash).
if [ "$(id -u)" = 0 ] || [ "${CI:-}" = true ]; then
  log "test VM image"
  "$here/build-test-vm-image.sh" >/dev/null || log "the test VM image could not be built: the libvirt end-to-end tests will fail under CI=true"
  # The SSH driver's test hosts: a Docker image (debootstrap; cached by the script's hash).
  log "test SSH host image"
  if ssh_host_image=$("$here/build-test-ssh-host.sh" | tail -1) && [ -n "$ssh_host_image" ]; then
    export TIMONEL_TEST_SSH_HOST_IMAGE="$ssh_host_image"
  else
    log "the test SSH host image could not be built: the SSH end-to-end tests will fail under CI=true"
  fi
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "building the k3s stand-in (static)"
"$here/build-standin.sh" >/dev/null

# The API load balancer of multi-server clusters on Docker: static, named by TIMONEL_LB.
log "building the API load balancer (timonel-lb, static)"
TIMONEL_LB=$("$here/build-lb.sh")
export TIMONEL_LB

# timonel finds its kvm helper beside itself: target/debug/timonel-kvm for the tests.
log "building the kvm helper (timonel-kvm)"
cargo build -p timonel-driver-kvm --bin timonel-kvm

log "tests (unit, contract, CLI, integration against the real daemons)"
if cargo nextest --version >/dev/null 2>&1; then
  # Doc tests first, so the run closes on nextest's summary of the whole suite.
  cargo test --workspace --doc
  cargo nextest run --workspace --run-ignored all --no-fail-fast
else
  cargo test --workspace --no-fail-fast -- --include-ignored
fi

# The Docker driver's own suite again, against real rootful Podman through its Docker API.
log "the Docker driver's suite against Podman (DOCKER_HOST=unix://$podman_socket)"
if cargo nextest --version >/dev/null 2>&1; then
  DOCKER_HOST="unix://$podman_socket" cargo nextest run -p timonel-driver-docker --test docker --run-ignored all --no-fail-fast
else
  DOCKER_HOST="unix://$podman_socket" cargo test -p timonel-driver-docker --test docker --no-fail-fast -- --include-ignored
fi

# The Windows lane: timonel.exe built for Windows and run under Wine (a stand-in, not Windows).
if [ "${TIMONEL_SKIP_WINDOWS:-}" = 1 ]; then
  log "Windows lane skipped (TIMONEL_SKIP_WINDOWS=1)"
else
  log "Windows lane: timonel.exe under Wine (scripts/test-windows.sh; TIMONEL_SKIP_WINDOWS=1 skips it)"
  "$here/test-windows.sh"
fi
