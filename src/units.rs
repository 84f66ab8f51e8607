//! Sizes as users write them.

/// Parses a memory size: `2048`, `2048m`, `2g`, `2GiB`, `512MB` → MiB.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 2g, 2048m)"))?;
    let mib = match unit.trim() {
        "" | "m" | "mb" | "mib" => n,
        "g" | "gb" | "gib" => n.saturating_mul(1024),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use m or g)")),
    };
    if mib < 256 {
        return Err(format!(
            "`{s}` is too little memory for a Kubernetes node (at least 256m; k3s wants 512m or more)"
        ));
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_memory("2g").unwrap(), 2048);
        assert_eq!(parse_memory("2GiB").unwrap(), 2048);
        assert_eq!(parse_memory("1536m").unwrap(), 1536);
        assert_eq!(parse_memory("1024").unwrap(), 1024);
        assert!(parse_memory("12x").unwrap_err().contains("unknown unit"));
        assert!(parse_memory("lots").unwrap_err().contains("not a size"));
        assert!(parse_memory("100m").unwrap_err().contains("too little"));
    }
}
