//! The base VHDX made by Hyper-V itself: timonel hands `Convert-VHD` a fixed VHD (the cloud
//! image's disk and a footer) and Hyper-V writes the dynamic VHDX that every node's differencing
//! disk then points at. No `qemu-img` on the Windows machine; and the VHDX is one Hyper-V wrote,
//! so it is never a sparse file (Hyper-V refuses to attach sparse or compressed disk files,
//! which `qemu-img` for Windows makes).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use timonel_driver::{DiskImages, DiskSource, DiskTool, DriverError};

use crate::parse::parse_json;
use crate::script::{vars, PsScript};
use crate::HyperVDriver;

/// Converting writes the whole disk (a few GB).
const CONVERT_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// `Convert-VHD` from the fixed VHD to a dynamic VHDX (the format follows the destination's
/// extension), then `Get-VHD` of the result. A failed conversion removes what it left.
pub fn convert(source: &str, dest: &str) -> PsScript {
    PsScript::new(&[
        "try { Hyper-V\\Convert-VHD -Path $env:TIMONEL_VHD_SOURCE -DestinationPath $env:TIMONEL_VHD_PATH -VHDType Dynamic } \
catch { Remove-Item -LiteralPath $env:TIMONEL_VHD_PATH -Force -ErrorAction SilentlyContinue; throw }",
        "$v = Hyper-V\\Get-VHD -Path $env:TIMONEL_VHD_PATH",
        "[pscustomobject]@{ VhdFormat = $v.VhdFormat.ToString(); VhdType = $v.VhdType.ToString(); Size = [int64]$v.Size } | ConvertTo-Json -Compress",
    ])
    .set(vars::VHD_SOURCE, source)
    .set(vars::VHD_PATH, dest)
    .timeout(CONVERT_TIMEOUT)
}

/// What `Get-VHD` said of the new disk.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Made {
    vhd_format: String,
    vhd_type: String,
    size: u64,
}

fn path_text(path: &Path) -> Result<String, DriverError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| DriverError::Backend {
            op: "make the base VHDX".to_string(),
            message: format!("the path `{}` is not valid Unicode", path.display()),
            hint: None,
        })
}

/// Hyper-V's virtual disk errors (`0xC03A…`) name the file, not the fix: say what to do.
fn with_disk_hint(e: DriverError) -> DriverError {
    match e {
        DriverError::Backend { op, message, .. } if message.contains("(0xC03A001A)") => {
            DriverError::Backend {
                op,
                message,
                hint: Some(
                    "Hyper-V refuses disk files that are sparse, compressed or encrypted: clear \
                     the Compress and Encrypt attributes of timonel's cache folder (`compact /u \
                     /s:<folder>`, `cipher /d /s:<folder>`) and start again"
                        .to_string(),
                ),
            }
        }
        DriverError::Backend { op, message, .. } if message.contains("(0xC03A") => {
            DriverError::Backend {
                op,
                message,
                hint: Some(
                    "the VHD timonel wrote for Hyper-V is damaged (a full disk?): check the free \
                     space, delete the image's folder under `images` in timonel's cache and \
                     start again"
                        .to_string(),
                ),
            }
        }
        other => other,
    }
}

#[async_trait]
impl DiskImages for HyperVDriver {
    fn disk_tool(&self) -> DiskTool {
        DiskTool {
            name: "Hyper-V's Convert-VHD",
            formats: &["vhdx"],
            source: DiskSource::FixedVhd,
        }
    }

    async fn make_disk(&self, source: &Path, dest: &Path, format: &str) -> Result<(), DriverError> {
        let op = "make the base VHDX";
        debug_assert_eq!(format, "vhdx");
        let what = format!("the disk `{}`", dest.display());
        let out = self
            .run(op, &what, convert(&path_text(source)?, &path_text(dest)?))
            .await
            .map_err(with_disk_hint)?;
        let made: Made = parse_json("the converted disk", &out)?;
        if made.vhd_format != "VHDX" || made.vhd_type != "Dynamic" || made.size == 0 {
            let _ = std::fs::remove_file(dest);
            return Err(DriverError::Backend {
                op: op.to_string(),
                message: format!(
                    "Convert-VHD made a {} {} disk of {} bytes, not a dynamic VHDX",
                    made.vhd_type, made.vhd_format, made.size
                ),
                hint: None,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_takes_its_paths_as_data() {
        let s = convert("C:\\c\\x.vhd", "C:\\c\\it's; $(evil).vhdx");
        let text = s.text();
        assert!(text.contains("Hyper-V\\Convert-VHD -Path $env:TIMONEL_VHD_SOURCE"));
        assert!(text.contains("-VHDType Dynamic"));
        assert!(!text.contains("evil") && !text.contains('"'), "{text}");
        assert!(s.env().contains(&(
            vars::VHD_PATH.to_string(),
            "C:\\c\\it's; $(evil).vhdx".to_string()
        )));
    }
}
