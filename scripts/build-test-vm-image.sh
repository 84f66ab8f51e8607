#!/usr/bin/env bash
# Builds a small bootable Debian 12 qcow2 image with cloud-init, sshd, sudo and systemd-networkd,
# for the KVM driver's end-to-end test (drivers/kvm/tests/e2e.rs). Needs root and the Debian
# mirror configured for apt (debootstrap).
#
# The image is cached under $TIMONEL_TEST_CACHE (default /var/cache/timonel-test), keyed by the
# hash of this script, so reruns (and CI on the same machine) reuse it. Prints the image's path
# as the last line of stdout. Progress goes to stderr.
#
#   scripts/build-test-vm-image.sh            # build if missing, print the path
#   TIMONEL_TEST_VM_IMAGE=$(scripts/build-test-vm-image.sh | tail -1)
set -euo pipefail

cache=${TIMONEL_TEST_CACHE:-/var/cache/timonel-test}
key=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
image="$cache/debian12-cloudinit-$key.qcow2"
log() { echo "build-test-vm-image: $*" >&2; }

if [[ -f $image ]]; then
    log "cached: $image"
    echo "$image"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    log "needs root (debootstrap, losetup, mount)"
    exit 1
fi

need=()
for pair in debootstrap:debootstrap sfdisk:fdisk grub-install:grub2-common qemu-img:qemu-utils mkfs.ext4:e2fsprogs losetup:mount; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[[ -d /usr/lib/grub/i386-pc ]] || need+=(grub-pc-bin)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

# The mirror apt already uses (deb822 or one-line format), else Debian's default.
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/\?$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 || true)
if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
    mirror=$(awk '$1 == "deb" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
part_dev="" disk_dev=""
cleanup() {
    mountpoint -q "$work/mnt" && umount "$work/mnt"
    [[ -n $disk_dev ]] && losetup -d "$disk_dev" 2>/dev/null
    [[ -n $part_dev ]] && losetup -d "$part_dev" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

root="$work/rootfs"
log "debootstrap bookworm from $mirror (about 2 minutes)"
# python3-cffi-backend must be listed: without it cloud-init's python3-cryptography fails to
# configure in a minbase bootstrap.
debootstrap --variant=minbase \
    --include=systemd-sysv,openssh-server,cloud-init,python3-cffi-backend,iproute2,ca-certificates,linux-image-amd64,sudo,udev,kmod,dbus \
    bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -20 "$work/debootstrap.log" >&2
    exit 1
}

log "configuring the guest"
cat >"$root/etc/fstab" <<'FSTAB'
LABEL=root / ext4 defaults,errors=remount-ro 0 1
FSTAB
# Only NoCloud (no metadata-server probing), and network config rendered for systemd-networkd.
cat >"$root/etc/cloud/cloud.cfg.d/90-timonel-test.cfg" <<'CFG'
datasource_list: [ NoCloud, None ]
# RSA host key generation is slow under TCG; timonel's client uses ed25519.
ssh_genkeytypes: [ ed25519 ]
system_info:
  network:
    renderers: [ networkd ]
CFG
chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
# Fallback when cloud-init writes no network config: DHCP on every ethernet NIC.
cat >"$root/etc/systemd/network/99-dhcp.network" <<'NET'
[Match]
Type=ether
[Network]
DHCP=ipv4
NET
# Per-instance identity: cloud-init regenerates the host keys, systemd the machine id.
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old "$root"/usr/share/doc/* "$root"/usr/share/man/*

kernel=$(cd "$root/boot" && ls vmlinuz-* | sort -V | tail -1)
initrd=initrd.img-${kernel#vmlinuz-}
[[ -f $root/boot/$initrd ]] || { log "no initrd for $kernel"; exit 1; }

log "making the disk"
raw="$work/disk.raw"
truncate -s 2G "$raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$raw" >&2
# `losetup -P` makes no partition nodes without udev: attach the partition alone by its offset
# (and the whole disk separately, for GRUB).
part_dev=$(losetup -f --show -o $((2048 * 512)) "$raw")
mkfs.ext4 -q -L root -d "$root" "$part_dev"
mkdir -p "$work/mnt"
mount "$part_dev" "$work/mnt"
disk_dev=$(losetup -f --show "$raw")
grub-install --target=i386-pc --boot-directory="$work/mnt/boot" \
    --modules="part_msdos ext2 biosdisk search_label" --force "$disk_dev" >&2 2>"$work/grub.log" || {
    cat "$work/grub.log" >&2
    exit 1
}
cat >"$work/mnt/boot/grub/grub.cfg" <<GRUB
set timeout=0
insmod part_msdos
insmod ext2
search --no-floppy --label root --set=root
linux /boot/$kernel root=LABEL=root rw console=ttyS0 net.ifnames=0 printk.time=1
initrd /boot/$initrd
boot
GRUB
umount "$work/mnt"
losetup -d "$disk_dev"; disk_dev=""
losetup -d "$part_dev"; part_dev=""

log "converting to qcow2"
qemu-img convert -f raw -O qcow2 "$raw" "$work/image.qcow2"
chmod 0644 "$work/image.qcow2"
mv "$work/image.qcow2" "$image"
# Drop images built by older versions of this script.
find "$cache" -maxdepth 1 -name 'debian12-cloudinit-*.qcow2' ! -name "$(basename "$image")" -delete
log "built $image"
echo "$image"
