//! The test VM image: a small Debian with cloud-init and sshd, built once and cached by
//! scripts/build-test-vm-image.sh (which prints its path as its last line).

use std::path::PathBuf;
use std::process::Command;

/// The image's path, building it when missing; why not when the script fails.
pub fn test_vm_image() -> Result<PathBuf, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/build-test-vm-image.sh");
    match Command::new("bash").arg(&script).output() {
        Ok(o) if o.status.success() => {
            let path = PathBuf::from(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim(),
            );
            if path.exists() {
                Ok(path)
            } else {
                Err(format!(
                    "build-test-vm-image.sh printed `{}`, which does not exist",
                    path.display()
                ))
            }
        }
        Ok(o) => Err(format!(
            "build-test-vm-image.sh failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Err(format!("cannot run build-test-vm-image.sh: {e}")),
    }
}

/// Under CI=true a missing prerequisite fails the test; elsewhere it is skipped with the reason.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {why}");
    }
    eprintln!("skipping: {why}");
}

/// `start` on VM driver `driver` booting `image` with the stand-in: 1 GiB and `cpus` per node, up
/// to 10 minutes to be Ready (TCG boots on a loaded host), then `extra`.
pub fn vm_start_args(driver: &str, image: &str, cpus: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "start",
        "--driver",
        driver,
        "--vm-image",
        image,
        "--kubernetes-version",
        super::sandbox::VERSION,
        "--memory",
        "1g",
        "--cpus",
        cpus,
        "--wait-timeout",
        "10m",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}
