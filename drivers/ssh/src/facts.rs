//! What timonel checks on a machine before it changes anything there (the preflight), read in
//! one shell round trip.

use serde::{Deserialize, Serialize};
use timonel_driver::NodeRole;

/// Where timonel records that a machine is a node of one of its clusters.
pub const MARKER_PATH: &str = "/etc/timonel/node.json";
/// The folder of [`MARKER_PATH`], removed with it.
pub const MARKER_DIR: &str = "/etc/timonel";

/// Free space k3s needs under /var/lib (binary data, images, the datastore).
pub const MIN_DISK_KIB: u64 = 2 * 1024 * 1024;
/// Memory below which k3s does not run usefully: a server, an agent (docs/k3s-contract.md §7.5).
pub const MIN_SERVER_MEM_KIB: u64 = 1024 * 1024;
pub const MIN_AGENT_MEM_KIB: u64 = 512 * 1024;

/// Places k3s (and the CNI it runs) creates. Those that existed before the install are
/// recorded and left alone by the uninstall.
/// Nested ones are listed too, so a parent that existed before (e.g. /etc/rancher of another
/// Rancher product) is kept while what k3s made inside it goes.
pub const K3S_DIRS: &[&str] = &[
    "/etc/rancher",
    "/etc/rancher/k3s",
    "/etc/rancher/node",
    "/var/lib/rancher",
    "/var/lib/rancher/k3s",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/etc/cni",
    "/opt/cni",
    "/run/k3s",
    "/run/flannel",
];

/// Signs of a k3s installation timonel did not make.
pub const K3S_SIGNS: &[&str] = &[
    "/usr/local/bin/k3s",
    "/usr/bin/k3s",
    "/etc/systemd/system/k3s.service",
    "/etc/systemd/system/k3s-agent.service",
    "/lib/systemd/system/k3s.service",
    "/etc/rancher/k3s",
    "/var/lib/rancher/k3s",
];

/// The record timonel keeps on a node (at [`MARKER_PATH`], one line of JSON, root-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The cluster's identity (not its name: two admins may both call theirs `dev`).
    pub cluster_id: String,
    pub cluster: String,
    pub node: String,
    /// Of [`K3S_DIRS`], those that existed before timonel installed anything.
    pub preexisting: Vec<String>,
    /// Files timonel placed (config, certificates, binary, units), removed by the uninstall.
    pub placed: Vec<String>,
}

/// The preflight script: `key=value` lines on stdout. Runs as root.
pub fn script() -> String {
    let signs = K3S_SIGNS.join(" ");
    let dirs = K3S_DIRS.join(" ");
    format!(
        r#"echo "kernel=$(uname -s)"
echo "arch=$(uname -m)"
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os=${{PRETTY_NAME:-$ID}}"; fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then echo systemd=yes; else echo systemd=no; fi
echo "disk_kib=$(df -Pk /var/lib 2>/dev/null | awk 'NR==2 {{print $4}}')"
echo "mem_kib=$(awk '/^MemTotal:/ {{print $2}}' /proc/meminfo)"
for f in /proc/net/tcp /proc/net/tcp6; do
  [ -r "$f" ] && awk 'NR > 1 && $4 == "0A" {{ split($2, a, ":"); print "listen=" a[2] }}' "$f"
done
for p in {signs}; do [ -e "$p" ] && echo "k3s=$p"; done
for p in {dirs}; do [ -e "$p" ] && echo "exists=$p"; done
for fw in firewalld ufw; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$fw" 2>/dev/null; then echo "firewall=$fw"; fi
done
if [ -r {MARKER_PATH} ]; then echo "marker=$(tr -d '\n' < {MARKER_PATH})"; fi
true
"#
    )
}

/// What the preflight found on one machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub kernel: String,
    /// `uname -m`: x86_64, aarch64, armv7l.
    pub machine: String,
    pub os: String,
    pub systemd: bool,
    pub disk_free_kib: Option<u64>,
    pub mem_total_kib: Option<u64>,
    /// TCP ports something listens on.
    pub listening: Vec<u16>,
    /// Paths that show a k3s installation.
    pub k3s: Vec<String>,
    /// Of [`K3S_DIRS`] (and the marker folder), those that exist.
    pub existing: Vec<String>,
    /// timonel's record, when the machine is (or was) a node of a timonel cluster.
    pub marker: Option<Marker>,
    /// Host firewalls that are active (`firewalld`, `ufw`).
    pub firewalls: Vec<String>,
}

/// One reason a machine cannot be used, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub fix: String,
}

impl HostFacts {
    pub fn parse(text: &str) -> Self {
        let mut f = Self::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k {
                "kernel" => f.kernel = v.to_string(),
                "arch" => f.machine = v.to_string(),
                "os" => f.os = v.trim_matches('"').to_string(),
                "systemd" => f.systemd = v == "yes",
                "disk_kib" => f.disk_free_kib = v.trim().parse().ok(),
                "mem_kib" => f.mem_total_kib = v.trim().parse().ok(),
                "listen" => {
                    if let Ok(p) = u16::from_str_radix(v.trim(), 16) {
                        if !f.listening.contains(&p) {
                            f.listening.push(p);
                        }
                    }
                }
                "k3s" => f.k3s.push(v.to_string()),
                "exists" => f.existing.push(v.to_string()),
                "marker" => f.marker = serde_json::from_str(v).ok(),
                "firewall" => f.firewalls.push(v.to_string()),
                _ => {}
            }
        }
        f
    }

    /// k3s's name for the machine's architecture (`amd64`, `arm64`, `arm`).
    pub fn arch(&self) -> Option<&'static str> {
        match self.machine.as_str() {
            "x86_64" | "amd64" => Some("amd64"),
            "aarch64" | "arm64" => Some("arm64"),
            m if m.starts_with("armv7") || m == "armhf" => Some("arm"),
            _ => None,
        }
    }

    /// Things worth saying that do not stop the install: an active host firewall blocks what
    /// k3s nodes say to each other unless the ports are open (k3s's docs advise turning
    /// firewalld and ufw off, or opening them).
    pub fn warnings(&self) -> Vec<String> {
        self.firewalls
            .iter()
            .map(|fw| {
                format!(
                    "{fw} is active: open 6443/tcp (API), 8472/udp (flannel VXLAN) and 10250/tcp (kubelet) between the machines, or the nodes may not reach each other"
                )
            })
            .collect()
    }

    /// Whether the machine is already a node of the cluster `cluster_id`.
    pub fn owned_by(&self, cluster_id: &str) -> bool {
        self.marker
            .as_ref()
            .is_some_and(|m| m.cluster_id == cluster_id)
    }

    /// Everything that stops timonel from installing a `role` node here. `adopt`: an existing
    /// k3s (or another timonel cluster's node) may be replaced.
    pub fn problems(&self, role: NodeRole, adopt: bool, cluster_id: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut add = |what: String, fix: &str| {
            out.push(Problem {
                what,
                fix: fix.to_string(),
            })
        };
        if self.kernel != "Linux" {
            add(
                format!("it is not Linux (uname -s says `{}`)", self.kernel),
                "k3s runs on Linux only; pick a Linux machine",
            );
            return out;
        }
        if self.arch().is_none() {
            add(
                format!("its architecture `{}` has no k3s build", self.machine),
                "k3s ships for x86_64, aarch64 and armv7; pick such a machine",
            );
        }
        if !self.systemd {
            add(
                "it does not run systemd (no /run/systemd/system)".to_string(),
                "timonel runs k3s as a systemd service; use a machine booted with systemd",
            );
        }
        match self.disk_free_kib {
            Some(kib) if kib < MIN_DISK_KIB => add(
                format!(
                    "only {} MiB are free under /var/lib (k3s needs {} MiB)",
                    kib / 1024,
                    MIN_DISK_KIB / 1024
                ),
                "free some disk space on that machine",
            ),
            _ => {}
        }
        let min_mem = match role {
            NodeRole::Server => MIN_SERVER_MEM_KIB,
            NodeRole::Agent => MIN_AGENT_MEM_KIB,
        };
        match self.mem_total_kib {
            Some(kib) if kib < min_mem => add(
                format!(
                    "it has {} MiB of memory (a k3s {role} needs {} MiB)",
                    kib / 1024,
                    min_mem / 1024
                ),
                "use a machine with more memory",
            ),
            _ => {}
        }
        let mine = self.owned_by(cluster_id);
        match &self.marker {
            Some(m) if !mine && !adopt => add(
                format!(
                    "it is node `{}` of another timonel cluster (`{}`)",
                    m.node, m.cluster
                ),
                "delete that cluster first (`timonel delete -p <name>` where it was made), or pass --adopt to replace it",
            ),
            _ => {}
        }
        if !self.k3s.is_empty() && self.marker.is_none() && !adopt {
            add(
                format!("k3s is already installed ({})", self.k3s.join(", ")),
                "timonel does not touch a k3s it did not install: uninstall it (`/usr/local/bin/k3s-uninstall.sh`), or pass --adopt to replace it (its data is removed)",
            );
        }
        // Ports held by a k3s that is there are that k3s's: reported above, or about to be
        // replaced (--adopt), or ours.
        if self.k3s.is_empty() {
            let ports: &[u16] = match role {
                NodeRole::Server => &[6443, 10250],
                NodeRole::Agent => &[10250],
            };
            for p in ports {
                if self.listening.contains(p) {
                    add(
                        format!("something already listens on port {p}"),
                        "stop what uses that port (`ss -ltnp` shows it), or pick another machine",
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "kernel=Linux\narch=x86_64\nos=Debian GNU/Linux 12 (bookworm)\nsystemd=yes\ndisk_kib=52428800\nmem_kib=4025000\nlisten=0016\nlisten=0016\n";

    #[test]
    fn a_clean_machine_passes() {
        let f = HostFacts::parse(CLEAN);
        assert_eq!(f.arch(), Some("amd64"));
        assert_eq!(f.os, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(f.listening, vec![22]);
        assert!(f.problems(NodeRole::Server, false, "c1").is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_a_fix() {
        let text = "kernel=Linux\narch=riscv64\nsystemd=no\ndisk_kib=1024\nmem_kib=262144\nlisten=192B\nlisten=280A\nk3s=/usr/local/bin/k3s\nk3s=/var/lib/rancher/k3s\nexists=/var/lib/rancher\n";
        let f = HostFacts::parse(text);
        let p = f.problems(NodeRole::Server, false, "c1");
        let all: String = p.iter().map(|p| format!("{}\n", p.what)).collect();
        for want in [
            "riscv64",
            "systemd",
            "1 MiB are free",
            "256 MiB of memory",
            "k3s is already installed (/usr/local/bin/k3s, /var/lib/rancher/k3s)",
        ] {
            assert!(all.contains(want), "{want} missing from:\n{all}");
        }
        // The ports belong to the k3s that is there; with --adopt it is replaced.
        assert!(!all.contains("port 6443"));
        let adopted = f.problems(NodeRole::Server, true, "c1");
        assert!(!adopted.iter().any(|p| p.what.contains("already installed")));
        assert!(p.iter().all(|p| !p.fix.is_empty()));
    }

    #[test]
    fn busy_ports_and_foreign_clusters() {
        let f = HostFacts::parse(&format!("{CLEAN}listen=192B\n"));
        let p = f.problems(NodeRole::Server, false, "c1");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].what.contains("6443"));
        assert!(f.problems(NodeRole::Agent, false, "c1").is_empty());

        let marker = Marker {
            cluster_id: "other".into(),
            cluster: "dev".into(),
            node: "dev-m02".into(),
            preexisting: vec![],
            placed: vec![],
        };
        let line = serde_json::to_string(&marker).unwrap();
        let f = HostFacts::parse(&format!("{CLEAN}k3s=/usr/local/bin/k3s\nmarker={line}\n"));
        assert_eq!(f.marker.as_ref(), Some(&marker));
        let p = f.problems(NodeRole::Agent, false, "c1");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].what.contains("another timonel cluster (`dev`)"));
        assert!(f.problems(NodeRole::Agent, false, "other").is_empty());
        assert!(f.problems(NodeRole::Agent, true, "c1").is_empty());
    }

    #[test]
    fn an_active_firewall_is_a_warning_not_a_refusal() {
        let f = HostFacts::parse(&format!("{CLEAN}firewall=ufw\n"));
        assert!(f.problems(NodeRole::Server, false, "c1").is_empty());
        let w = f.warnings();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("ufw is active") && w[0].contains("8472/udp"),
            "{w:?}"
        );
        assert!(HostFacts::parse(CLEAN).warnings().is_empty());
    }

    #[test]
    fn not_linux_stops_there() {
        let f = HostFacts::parse("kernel=FreeBSD\narch=amd64\n");
        let p = f.problems(NodeRole::Agent, false, "c");
        assert_eq!(p.len(), 1);
        assert!(p[0].what.contains("FreeBSD"));
    }
}
