//! Removing k3s from a machine so it is left as it was: services, processes, mounts, network
//! interfaces and firewall chains k3s made, the files timonel placed, and the k3s folders that
//! did not exist before the install.

use crate::facts::{Marker, K3S_DIRS, MARKER_DIR};

/// The units timonel writes (`k3s` on servers, `k3s-agent` on agents), as install.sh names them.
pub const UNITS: &[&str] = &["k3s", "k3s-agent"];

/// Interfaces k3s's flannel, CNI bridge and kube-proxy (IPVS) create.
const INTERFACES: &[&str] = &[
    "cni0",
    "flannel.1",
    "flannel-v6.1",
    "flannel-wg",
    "flannel-wg-v6",
    "kube-ipvs0",
];

/// What install.sh leaves besides the binary, removed when replacing a k3s timonel did not
/// install (`--adopt`).
const INSTALL_SH_FILES: &[&str] = &[
    "/usr/local/bin/k3s",
    "/usr/bin/k3s",
    "/usr/local/bin/k3s-killall.sh",
    "/usr/local/bin/k3s-uninstall.sh",
    "/usr/local/bin/k3s-agent-uninstall.sh",
    "/etc/systemd/system/k3s.service.env",
    "/etc/systemd/system/k3s-agent.service.env",
    "/lib/systemd/system/k3s.service",
];

/// A shell pattern for k3s's data folder that does not match the script's own command line
/// (which `pkill -f` would otherwise kill).
const DATA_PROCESSES: &str = "/var/lib/rancher/k3s/dat[a]/";

/// Stops the k3s services and what they started (pods keep running under containerd's shims
/// otherwise). Runs as root.
pub fn stop_script() -> String {
    let units = UNITS.join(" ");
    format!(
        r#"for u in {units}; do
  if systemctl cat "$u" >/dev/null 2>&1; then systemctl stop "$u" || exit 1; fi
done
pkill -TERM -f '{DATA_PROCESSES}' 2>/dev/null
true
"#
    )
}

/// The uninstall script. With a marker, only what timonel made goes; without one (`--adopt` of a
/// k3s someone else installed), every k3s folder and install.sh file goes too.
pub fn script(marker: Option<&Marker>) -> String {
    let units = UNITS.join(" ");
    let interfaces = INTERFACES.join(" ");
    let mut files: Vec<String> = UNITS
        .iter()
        .map(|u| format!("/etc/systemd/system/{u}.service"))
        .collect();
    let dirs: Vec<&str> = match marker {
        Some(m) => {
            files.extend(m.placed.iter().cloned());
            K3S_DIRS
                .iter()
                .copied()
                .filter(|d| !m.preexisting.iter().any(|p| p == d))
                .collect()
        }
        None => {
            files.extend(INSTALL_SH_FILES.iter().map(|s| s.to_string()));
            K3S_DIRS.to_vec()
        }
    };
    let quoted = |items: &mut dyn Iterator<Item = &str>| -> String {
        items
            .map(|s| timonel_driver_vm::shell::quote(s).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let files = quoted(&mut files.iter().map(String::as_str));
    let mut dirs_list = dirs.clone();
    dirs_list.push(MARKER_DIR);
    let dirs_q = quoted(&mut dirs_list.into_iter());
    let mut adopt_links = String::new();
    if marker.is_none() {
        adopt_links.push_str(
            "for l in /usr/local/bin/kubectl /usr/local/bin/crictl /usr/local/bin/ctr; do\n  [ -L \"$l\" ] && [ \"$(readlink \"$l\")\" = k3s -o \"$(readlink \"$l\")\" = /usr/local/bin/k3s ] && rm -f \"$l\"\ndone\n",
        );
    }
    format!(
        r#"for u in {units}; do
  if systemctl cat "$u" >/dev/null 2>&1; then
    systemctl stop "$u" 2>/dev/null
    systemctl disable "$u" 2>/dev/null
  fi
done
pkill -KILL -f '{DATA_PROCESSES}' 2>/dev/null
awk '{{print $2}}' /proc/self/mounts | grep -E '^/(run/k3s|var/lib/rancher/k3s|var/lib/kubelet|run/netns/cni-)' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
for i in {interfaces}; do
  if ip link show "$i" >/dev/null 2>&1; then ip link delete "$i" || exit 1; fi
done
for t in iptables ip6tables; do
  if command -v "$t-save" >/dev/null 2>&1 && "$t-save" 2>/dev/null | grep -qE 'KUBE-|CNI-|FLANNEL|flannel'; then
    "$t-save" | grep -vE 'KUBE-|CNI-|FLANNEL|flannel' | "$t-restore" || exit 1
  fi
done
{adopt_links}rm -f -- {files} || exit 1
rm -rf -- {dirs_q} || exit 1
systemctl daemon-reload
for u in {units}; do systemctl reset-failed "$u" 2>/dev/null; done
true
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker() -> Marker {
        Marker {
            cluster_id: "c1".into(),
            cluster: "dev".into(),
            node: "dev".into(),
            preexisting: vec!["/etc/cni".into(), "/opt/cni".into()],
            placed: vec![
                "/usr/local/bin/k3s".into(),
                "/etc/ssl/certs/timonel-extra-ca-1.pem".into(),
            ],
        }
    }

    #[test]
    fn only_what_timonel_made_goes() {
        let s = script(Some(&marker()));
        let rm_rf = s.lines().find(|l| l.starts_with("rm -rf")).unwrap();
        assert!(rm_rf.contains("/var/lib/rancher "), "{rm_rf}");
        assert!(rm_rf.contains("/etc/timonel"));
        assert!(!rm_rf.contains("/etc/cni"), "{rm_rf}");
        assert!(!rm_rf.contains("/opt/cni"), "{rm_rf}");
        let rm_f = s.lines().find(|l| l.starts_with("rm -f")).unwrap();
        assert!(rm_f.contains("/etc/ssl/certs/timonel-extra-ca-1.pem"));
        assert!(rm_f.contains("/etc/systemd/system/k3s-agent.service"));
        assert!(!s.contains("k3s-uninstall.sh"));
        assert!(!s.contains("readlink"));
    }

    #[test]
    fn a_parent_folder_that_was_there_stays_and_what_k3s_made_inside_goes() {
        let mut m = marker();
        m.preexisting = vec!["/etc/rancher".into(), "/etc/rancher/node".into()];
        let s = script(Some(&m));
        let rm_rf = s.lines().find(|l| l.starts_with("rm -rf")).unwrap();
        let words: Vec<&str> = rm_rf.split_whitespace().collect();
        assert!(words.contains(&"/etc/rancher/k3s"), "{rm_rf}");
        assert!(!words.contains(&"/etc/rancher"), "{rm_rf}");
        assert!(!words.contains(&"/etc/rancher/node"), "{rm_rf}");
        assert!(words.contains(&"/var/lib/rancher"), "{rm_rf}");
    }

    #[test]
    fn adopting_removes_the_foreign_install_too() {
        let s = script(None);
        assert!(s.contains("/usr/local/bin/k3s-uninstall.sh"));
        assert!(s.contains("readlink"));
        let rm_rf = s.lines().find(|l| l.starts_with("rm -rf")).unwrap();
        assert!(rm_rf.contains("/etc/cni"));
    }

    #[test]
    fn the_process_pattern_does_not_match_the_script() {
        // `pkill -f` matches the pattern as a regex against command lines; the script's own
        // command line holds the pattern literally, which must not match it.
        let literal = DATA_PROCESSES;
        assert!(!literal.contains("/data/"));
        assert!(stop_script().contains(DATA_PROCESSES));
    }
}
