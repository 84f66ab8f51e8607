#!/usr/bin/env bash
# Starts libvirt on a machine without systemd (containers, CI): virtlogd and libvirtd, if they
# are not running yet, then waits (with a deadline) until `virsh net-list` answers.
# Idempotent. Installs the Debian packages first when they are missing and we are root.
#
#   scripts/start-libvirt.sh            # uri qemu:///system, 60 s deadline
#   TIMONEL_LIBVIRT_WAIT=120 scripts/start-libvirt.sh
set -euo pipefail

uri=${LIBVIRT_DEFAULT_URI:-qemu:///system}
wait_secs=${TIMONEL_LIBVIRT_WAIT:-60}
log() { echo "start-libvirt: $*" >&2; }

need=()
command -v libvirtd >/dev/null || need+=(libvirt-daemon-system)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v dnsmasq >/dev/null || [[ -x /usr/sbin/dnsmasq ]] || need+=(dnsmasq-base)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root"
        exit 1
    fi
    log "installing ${need[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

running() { pgrep -x "$1" >/dev/null 2>&1; }

if ! running virtlogd; then
    log "starting virtlogd"
    virtlogd -d
fi
if ! running libvirtd; then
    log "starting libvirtd"
    libvirtd -d
fi

deadline=$((SECONDS + wait_secs))
until virsh -c "$uri" net-list --all >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
        log "libvirtd did not answer on $uri within ${wait_secs}s"
        virsh -c "$uri" net-list --all >&2 || true
        exit 1
    fi
    sleep 0.5
done
log "libvirt is up ($(virsh -c "$uri" version --daemon 2>/dev/null | sed -n 's/^Running against daemon: *//p'))"
virsh -c "$uri" net-list --all
