//! The fixed VHD: a raw disk followed by one 512-byte footer. Hyper-V's `Convert-VHD` reads it
//! (and makes the VHDX Generation 2 VMs boot from); docs/vm-disks.md describes the footer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The footer's size, and the sector size of the disk.
pub const SECTOR: u64 = 512;
/// `conectix`: the footer's first bytes.
const COOKIE: &[u8; 8] = b"conectix";
/// The creator application field: who wrote the file.
const CREATOR: &[u8; 4] = b"tmnl";
/// `2`: a fixed disk (3 dynamic, 4 differencing).
const FIXED: u32 = 2;
/// The largest geometry the footer can hold: 65535 cylinders, 16 heads, 255 sectors per track.
const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;
/// 2000-01-01 00:00:00 UTC, the footer's epoch, in Unix seconds.
const VHD_EPOCH: u64 = 946_684_800;

/// A disk's cylinders, heads and sectors per track, as the footer records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors: u8,
}

impl Geometry {
    /// The sectors the geometry addresses.
    pub fn total(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors)
    }

    /// The geometry the VHD format gives a disk of `sectors` 512-byte sectors: 17, 31, 63 or 255
    /// sectors per track and up to 16 heads, whichever first fits the cylinders in 1024 per head;
    /// the cylinder count rounds down, so the geometry may address fewer sectors than the disk.
    pub fn for_sectors(sectors: u64) -> Self {
        let sectors = sectors.min(MAX_CHS_SECTORS);
        let (spt, heads, per_track) = if sectors >= 65535 * 16 * 63 {
            (255, 16, sectors / 255)
        } else {
            let mut spt = 17;
            let mut per_track = sectors / spt;
            let mut heads = per_track.div_ceil(1024).max(4);
            if per_track >= heads * 1024 || heads > 16 {
                spt = 31;
                heads = 16;
                per_track = sectors / spt;
            }
            if per_track >= heads * 1024 {
                spt = 63;
                heads = 16;
                per_track = sectors / spt;
            }
            (spt, heads, per_track)
        };
        Self {
            cylinders: u16::try_from(per_track / heads).unwrap_or(u16::MAX),
            heads: u8::try_from(heads).unwrap_or(16),
            sectors: u8::try_from(spt).unwrap_or(u8::MAX),
        }
    }
}

/// The size a fixed VHD of at least `bytes` gets, and its geometry: whole sectors, grown until
/// the geometry addresses all of them. Readers that size a VHD by its geometry (QEMU does, for
/// files it does not know the creator of) and readers that use the recorded size (Hyper-V,
/// VirtualBox) then see the same disk. Disks beyond the largest geometry keep their size; those
/// readers use the recorded size there.
pub fn fitted(bytes: u64) -> (u64, Geometry) {
    let wanted = bytes.div_ceil(SECTOR);
    if wanted >= MAX_CHS_SECTORS {
        return (wanted * SECTOR, Geometry::for_sectors(wanted));
    }
    let mut n = wanted;
    loop {
        let g = Geometry::for_sectors(n);
        if g.total() >= wanted {
            return (g.total() * SECTOR, g);
        }
        n += 1;
    }
}

/// The footer of a fixed disk of `size` bytes (a multiple of [`SECTOR`], from [`fitted`]).
pub fn footer(size: u64, geometry: Geometry, unique_id: [u8; 16], at: SystemTime) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(COOKIE);
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: the reserved bit, always set
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // format version 1.0
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes()); // data offset: none for a fixed disk
    let secs = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        .saturating_sub(VHD_EPOCH);
    f[24..28].copy_from_slice(&u32::try_from(secs).unwrap_or(u32::MAX).to_be_bytes());
    f[28..32].copy_from_slice(CREATOR);
    f[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // creator version
    f[36..40].copy_from_slice(b"Wi2k"); // creator host OS: the format names Windows and Mac only
    f[40..48].copy_from_slice(&size.to_be_bytes()); // original size
    f[48..56].copy_from_slice(&size.to_be_bytes()); // current size
    f[56..58].copy_from_slice(&geometry.cylinders.to_be_bytes());
    f[58] = geometry.heads;
    f[59] = geometry.sectors;
    f[60..64].copy_from_slice(&FIXED.to_be_bytes());
    f[68..84].copy_from_slice(&unique_id);
    // 84: saved state 0; 85..512 reserved, zero.
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The one's complement of the byte sum of the footer, its checksum field counted as zero.
pub fn checksum(footer: &[u8; 512]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |acc, (_, b)| acc.wrapping_add(u32::from(*b)));
    !sum
}

#[cfg(test)]
#[path = "vhd_tests.rs"]
pub(crate) mod tests;
