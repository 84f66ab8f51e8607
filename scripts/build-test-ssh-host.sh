#!/usr/bin/env bash
# Builds the Docker image of the "test hosts" the SSH driver's end-to-end tests install k3s on:
# a small Debian 12 with real systemd (PID 1), Debian's openssh-server, sudo, iproute2, iptables.
# tests/support/ssh_hosts.rs starts containers from it (systemd as PID 1, see there) and reaches
# their sshd on the bridge IPs.
#
# What the image holds, beyond debootstrap's minbase:
#   - no SSH host keys: ssh-host-keys.service (oneshot, before ssh.service) runs `ssh-keygen -A`
#     at boot, so every container has its own keys; an empty /etc/machine-id, so every container
#     has its own machine id;
#   - sshd: PasswordAuthentication yes, PermitRootLogin prohibit-password, UseDNS no;
#   - users: alice (password alice-pw, passwordless sudo), bob (password bob-pw, no sudo);
#   - masked units that have no business in a container (gettys, udev, networkd, the periodic
#     apt/dpkg/e2scrub jobs that would change the machine under a test), so that after boot
#     `systemctl is-system-running` says running and `systemctl --failed` is empty.
#
# The rootfs tarball is cached under $TIMONEL_TEST_CACHE (default /var/cache/timonel-test), keyed
# by the hash of this script, and imported as timonel-test/ssh-host:<key> when Docker lacks that
# image. Prints the image tag as the last line of stdout; progress goes to stderr. Building needs
# root (debootstrap) and the Debian mirror apt uses; a cached image or tarball needs only Docker.
#
#   TIMONEL_TEST_SSH_HOST_IMAGE=$(scripts/build-test-ssh-host.sh | tail -1)
set -euo pipefail

cache=${TIMONEL_TEST_CACHE:-/var/cache/timonel-test}
key=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
repo=timonel-test/ssh-host
tag="$repo:$key"
tarball="$cache/ssh-host-$key.tar"
log() { echo "build-test-ssh-host: $*" >&2; }

if ! docker info >/dev/null 2>&1; then
    log "no Docker daemon answers (scripts/start-docker.sh starts one)"
    exit 1
fi
if docker image inspect "$tag" >/dev/null 2>&1; then
    log "cached: $tag"
    echo "$tag"
    exit 0
fi

import_image() {
    log "importing $tarball as $tag"
    docker import \
        --change 'ENV container=docker' \
        --change 'CMD ["/lib/systemd/systemd"]' \
        --message "timonel SSH test host ($key)" \
        "$tarball" "$tag" >/dev/null
    # Drop images built by older versions of this script (those still in use stay).
    docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo" | grep -vxF "$tag" |
        xargs -r docker image rm >/dev/null 2>&1 || true
    echo "$tag"
}

if [[ -f $tarball ]]; then
    import_image
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    log "needs root (debootstrap, chroot)"
    exit 1
fi

mkdir -p "$cache"
# One build at a time (test processes may ask concurrently); the winner's result serves the rest.
exec 9>"$cache/.ssh-host.lock"
flock 9
if [[ -f $tarball ]]; then
    import_image
    exit 0
fi

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
fi

# The mirror apt already uses (deb822 or one-line format), else Debian's default.
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/\?$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 || true)
if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
    mirror=$(awk '$1 == "deb" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

root="$work/rootfs"
log "debootstrap bookworm from $mirror (about 2 minutes)"
debootstrap --variant=minbase \
    --include=systemd-sysv,openssh-server,sudo,iproute2,procps,dbus,iptables,kmod,ca-certificates \
    bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -20 "$work/debootstrap.log" >&2
    exit 1
}

log "configuring the host"
in_root() { chroot "$root" "$@"; }

# Per-container identity: host keys made at boot, machine id made by systemd at boot.
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$root/var/lib/dbus/machine-id"
cat >"$root/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Generate this machine's missing SSH host keys
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
RequiredBy=ssh.service
UNIT
quiet() { "$@" >"$work/cmd.log" 2>&1 || { cat "$work/cmd.log" >&2; return 1; }; }
quiet in_root systemctl enable ssh-host-keys.service ssh.service

cat >"$root/etc/ssh/sshd_config.d/10-timonel-test.conf" <<'SSHD'
# timonel's SSH test host: passwords for the users, keys only for root, no reverse lookups.
PasswordAuthentication yes
PermitRootLogin prohibit-password
UseDNS no
SSHD

in_root useradd --create-home --shell /bin/bash alice
in_root useradd --create-home --shell /bin/bash bob
printf 'alice:alice-pw\nbob:bob-pw\n' | in_root chpasswd
echo 'alice ALL=(ALL) NOPASSWD: ALL' >"$root/etc/sudoers.d/alice"
chmod 0440 "$root/etc/sudoers.d/alice"
in_root visudo -cq

# Nothing here has a console, udev or a network to configure (Docker does it), and the periodic
# jobs would change the machine under a test. Masking a unit that is not installed is harmless.
quiet in_root systemctl mask \
    getty.target console-getty.service getty-static.service getty@tty1.service \
    systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service \
    systemd-networkd.service systemd-networkd.socket systemd-networkd-wait-online.service \
    systemd-firstboot.service systemd-resolved.service \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
    e2scrub_reap.service

in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old "$root"/var/log/*.log \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*

log "packing the rootfs"
tar -C "$root" --numeric-owner -cf "$work/rootfs.tar" .
mv "$work/rootfs.tar" "$tarball"
# Drop tarballs built by older versions of this script.
find "$cache" -maxdepth 1 -name 'ssh-host-*.tar' ! -name "$(basename "$tarball")" -delete
import_image
