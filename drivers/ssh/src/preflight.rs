//! The preflight: every machine checked before anything changes on any.

use std::collections::BTreeMap;

use async_trait::async_trait;
use timonel_driver::{DriverError, MachineFacts, MachineName, Preflight};

use crate::{error_text, HostFacts, Problem, SshDriver};

impl SshDriver {
    /// Checks every machine before anything is changed on any: the login (host key, user,
    /// credentials), root through sudo, OS and architecture, systemd, disk, memory, ports, and
    /// an existing k3s. Returns each node's facts, or one error naming every problem found.
    pub async fn preflight(&self) -> Result<BTreeMap<MachineName, HostFacts>, DriverError> {
        let all: Vec<MachineName> = self.nodes.keys().cloned().collect();
        self.preflight_of(&all).await
    }

    /// [`preflight`](Self::preflight) of some nodes only (a node being added).
    pub async fn preflight_of(
        &self,
        names: &[MachineName],
    ) -> Result<BTreeMap<MachineName, HostFacts>, DriverError> {
        let mut seen: BTreeMap<(String, u16), &MachineName> = BTreeMap::new();
        for (name, node) in &self.nodes {
            if let Some(other) = seen.insert((node.host.host.clone(), node.host.port), name) {
                return Err(DriverError::Backend {
                    op: "preflight".into(),
                    message: format!(
                        "nodes `{other}` and `{name}` are the same machine ({})",
                        node.host.address()
                    ),
                    hint: Some("give each --node a different machine".into()),
                });
            }
        }
        let checks = self
            .nodes
            .iter()
            .filter(|(name, _)| names.contains(name))
            .map(|(name, node)| async move {
            let result = async {
                // The login first: host key, user, credentials.
                if let Err(e) = self.session(name).await {
                    return Err(vec![Problem {
                        what: e.to_string(),
                        fix: timonel_driver::Hint::hint(&e).unwrap_or_default(),
                    }]);
                }
                self.check_sudo(name).await.map_err(|e| {
                    vec![Problem {
                        what: e,
                        fix: format!(
                            "allow it in sudoers (`{} ALL=(ALL) NOPASSWD: ALL` in /etc/sudoers.d/), or log in as root",
                            node.host.user
                        ),
                    }]
                })?;
                let facts = self.inspect(name).await.map_err(|e| {
                    vec![Problem {
                        what: error_text(&e),
                        fix: String::new(),
                    }]
                })?;
                let problems = facts.problems(node.role, self.adopt, &self.cluster_id);
                if problems.is_empty() {
                    Ok(facts)
                } else {
                    Err(problems)
                }
            }
            .await;
            (name.clone(), node, result)
        });
        let results = futures_util::future::join_all(checks).await;
        let mut facts = BTreeMap::new();
        let mut failed = Vec::new();
        let mut fixes: Vec<String> = Vec::new();
        for (name, node, result) in results {
            match result {
                Ok(f) => {
                    facts.insert(name, f);
                }
                Err(problems) => {
                    for p in problems {
                        failed.push(format!("  {} ({name}): {}", node.host, p.what));
                        if !p.fix.is_empty() && !fixes.contains(&p.fix) {
                            fixes.push(p.fix);
                        }
                    }
                }
            }
        }
        if !failed.is_empty() {
            return Err(DriverError::Backend {
                op: "preflight".into(),
                message: format!(
                    "the machines are not ready for k3s; nothing was changed on any of them:\n{}",
                    failed.join("\n")
                ),
                hint: (!fixes.is_empty()).then(|| fixes.join("; ")),
            });
        }
        let arches: Vec<&str> = facts.values().filter_map(HostFacts::arch).collect();
        if arches.windows(2).any(|w| w[0] != w[1]) {
            return Err(DriverError::Backend {
                op: "preflight".into(),
                message: format!(
                    "the machines have different architectures ({}); nothing was changed",
                    arches.join(", ")
                ),
                hint: Some("use machines of one architecture per cluster".into()),
            });
        }
        Ok(facts)
    }
}

#[async_trait]
impl Preflight for SshDriver {
    async fn preflight(
        &self,
        nodes: &[MachineName],
    ) -> Result<BTreeMap<MachineName, MachineFacts>, DriverError> {
        let facts = if nodes.is_empty() {
            SshDriver::preflight(self).await?
        } else {
            self.preflight_of(nodes).await?
        };
        Ok(facts
            .into_iter()
            .map(|(name, f)| {
                let warnings = f.warnings();
                (
                    name,
                    MachineFacts {
                        arch: f.machine,
                        os: f.os,
                        warnings,
                    },
                )
            })
            .collect())
    }
}
