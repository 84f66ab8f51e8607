//! Host folders in a VM guest: the hypervisor shares each folder under [`Mount::tag`], and
//! one command over SSH (as root) loads the file system's modules, records the mounts in
//! `/etc/fstab` (so they come back at every boot) and mounts them now.

use std::fmt::Write as _;
use std::time::Duration;

use timonel_driver::{Cmd, GuestMount, Mount};

use crate::shell::quote;

/// The exit status of [`mount_command`] when the guest's kernel lacks a module it needs.
pub const MISSING_MODULES: i32 = 3;

/// The one line of `/etc/fstab` for the `index`th mount. `nofail`: a share that is missing
/// at boot does not stop the VM from booting (k3s still starts; the folder is then empty).
pub fn fstab_line(guest: &GuestMount, index: usize, mount: &Mount) -> String {
    format!(
        "{} {} {} {},nofail 0 0",
        Mount::tag(index),
        mount.node,
        guest.fs_type,
        guest.options_for(mount)
    )
}

/// The command that mounts `mounts` in the guest and keeps them in `/etc/fstab`. Run again,
/// it replaces timonel's lines rather than adding more.
pub fn mount_command(guest: &GuestMount, mounts: &[Mount]) -> Cmd {
    Cmd::new("sh")
        .arg("-c")
        .arg(script(guest, mounts, ""))
        .timeout(Duration::from_secs(60))
}

/// The script, with every file it touches under `root` (`""` in the guest; a scratch folder
/// in tests).
fn script(guest: &GuestMount, mounts: &[Mount], root: &str) -> String {
    let mut s = String::from("set -e\n");
    let modules: Vec<String> = guest
        .modules
        .iter()
        .map(|m| quote(m).into_owned())
        .collect();
    let _ = writeln!(
        s,
        "for m in {}; do modprobe \"$m\" || {{ echo \"the kernel has no module $m\" >&2; exit {MISSING_MODULES}; }}; done",
        modules.join(" ")
    );
    let _ = writeln!(
        s,
        "mkdir -p {root}/etc/modules-load.d && printf '%s\\n' {} > {root}/etc/modules-load.d/timonel-mounts.conf",
        modules.join(" ")
    );
    let _ = writeln!(s, "sed -i '/^timonel[0-9][0-9]* /d' {root}/etc/fstab");
    for (i, m) in mounts.iter().enumerate() {
        let _ = writeln!(
            s,
            "printf '%s\\n' {} >> {root}/etc/fstab",
            quote(&fstab_line(guest, i, m))
        );
    }
    for m in mounts {
        let dir = quote(&format!("{root}{}", m.node)).into_owned();
        let _ = writeln!(
            s,
            "mkdir -p {dir} && {{ mountpoint -q {dir} || mount {dir}; }}"
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts() -> Vec<Mount> {
        vec![
            Mount {
                host: "/home/me/src".into(),
                node: "/src".into(),
                read_only: true,
            },
            Mount {
                host: "/srv/out".into(),
                node: "/out".into(),
                read_only: false,
            },
        ]
    }

    #[test]
    fn fstab_lines_name_the_tag_type_and_mode() {
        let g = GuestMount::virtio_9p();
        let m = mounts();
        assert_eq!(
            fstab_line(&g, 0, &m[0]),
            "timonel0 /src 9p ro,trans=virtio,version=9p2000.L,msize=262144,nofail 0 0"
        );
        assert_eq!(
            fstab_line(&GuestMount::vboxsf(), 1, &m[1]),
            "timonel1 /out vboxsf rw,nofail 0 0"
        );
    }

    /// The script itself, run by a real shell against a scratch copy of its files: modules
    /// are checked first, fstab gets exactly timonel's lines (replaced on a second run), the
    /// folders are made and mounted.
    #[cfg(unix)]
    #[test]
    fn the_script_keeps_fstab_and_mounts_each_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/fstab"),
            "LABEL=root / ext4 defaults 0 1\ntimonel7 /old 9p rw 0 0\n",
        )
        .unwrap();
        let log = root.join("log");
        // Stand-ins for the guest's tools, recording their calls; `modprobe` fails for `bad`.
        for (tool, body) in [
            ("modprobe", "[ \"$1\" != bad ]"),
            ("mountpoint", "false"),
            ("mount", "true"),
        ] {
            let path = bin.join(tool);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\necho {tool} \"$@\" >> {}\n{body}\n",
                    log.display()
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let run = |g: &GuestMount| {
            let script = script(g, &mounts(), &root.display().to_string());
            std::process::Command::new("sh")
                .args(["-c", &script])
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .output()
                .unwrap()
        };
        let out = run(&GuestMount::virtio_9p());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(&GuestMount::virtio_9p());
        assert!(out.status.success());
        let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
        assert_eq!(
            fstab,
            "LABEL=root / ext4 defaults 0 1\n\
             timonel0 /src 9p ro,trans=virtio,version=9p2000.L,msize=262144,nofail 0 0\n\
             timonel1 /out 9p rw,trans=virtio,version=9p2000.L,msize=262144,nofail 0 0\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/modules-load.d/timonel-mounts.conf")).unwrap(),
            "9p\n9pnet_virtio\n"
        );
        assert!(root.join("src").is_dir() && root.join("out").is_dir());
        let calls = std::fs::read_to_string(&log).unwrap();
        assert!(
            calls.contains(&format!("mount {}/src", root.display())),
            "{calls}"
        );

        let mut missing = GuestMount::virtio_9p();
        missing.modules = vec!["bad".into()];
        let out = run(&missing);
        assert_eq!(out.status.code(), Some(MISSING_MODULES));
        assert!(String::from_utf8_lossy(&out.stderr).contains("the kernel has no module bad"));
    }
}
