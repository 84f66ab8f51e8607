//! `kubectl get nodes`, built in like k3s's multi-call binary (only that command).

use std::path::PathBuf;

use crate::http;
use crate::kubeconfig;
use crate::net::HttpsUrl;
use crate::pki;
use crate::runtime;
use crate::tls;

const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

pub fn run(args: &[String]) -> i32 {
    match run_inner(args) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn run_inner(args: &[String]) -> Result<String, String> {
    let mut kubeconfig_path: Option<PathBuf> = runtime::env("KUBECONFIG").map(PathBuf::from);
    let mut words = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(v) = a.strip_prefix("--kubeconfig=") {
            kubeconfig_path = Some(PathBuf::from(v));
        } else if a == "--kubeconfig" {
            i += 1;
            kubeconfig_path = Some(PathBuf::from(
                args.get(i).ok_or("--kubeconfig needs a value")?,
            ));
        } else {
            words.push(a.as_str());
        }
        i += 1;
    }
    if !matches!(words.as_slice(), ["get", "nodes" | "node" | "no"]) {
        return Err(format!(
            "the k3s stand-in only implements `kubectl get nodes` (got `kubectl {}`); use a real kubectl",
            args.join(" ")
        ));
    }
    let path = kubeconfig_path.unwrap_or_else(runtime::default_kubeconfig_path);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read kubeconfig `{}`: {e}", path.display()))?;
    let creds = kubeconfig::read_credentials(&text)?;
    let url = HttpsUrl::parse(&creds.server)?;
    let key = pki::key_from_pem(&String::from_utf8_lossy(&creds.key_pem)).map_err(|e| e.0)?;
    let config = tls::client_config(
        &pki::certs_from_pem(&creds.ca_pem),
        Some((
            pki::certs_from_pem(&creds.cert_pem),
            key.serialized_der().to_vec(),
        )),
    )?;
    let resp = http::request(
        config,
        &url,
        "GET",
        "/api/v1/nodes",
        &[("Accept", TABLE_ACCEPT.into())],
        b"",
    )
    .map_err(|e| format!("cannot reach {}: {e}", creds.server))?;
    if resp.status != 200 {
        return Err(format!(
            "server answered {}: {}",
            resp.status,
            resp.text().trim()
        ));
    }
    let table: serde_json::Value =
        serde_json::from_slice(&resp.body).map_err(|e| format!("bad answer: {e}"))?;
    Ok(render_table(&table))
}

/// Prints the priority-0 columns the way kubectl does (upper-case headers,
/// columns separated by at least three spaces).
pub fn render_table(table: &serde_json::Value) -> String {
    let empty = Vec::new();
    let defs = table["columnDefinitions"].as_array().unwrap_or(&empty);
    let shown: Vec<usize> = defs
        .iter()
        .enumerate()
        .filter(|(_, d)| d["priority"].as_u64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut grid: Vec<Vec<String>> = vec![shown
        .iter()
        .map(|i| defs[*i]["name"].as_str().unwrap_or("").to_uppercase())
        .collect()];
    for row in table["rows"].as_array().unwrap_or(&empty) {
        grid.push(
            shown
                .iter()
                .map(|i| match &row["cells"][*i] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..shown.len())
        .map(|c| grid.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &grid {
        let last = row.len().saturating_sub(1);
        for (c, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if c < last {
                out.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_kubectl() {
        let table = serde_json::json!({
            "columnDefinitions": [
                {"name": "Name", "priority": 0}, {"name": "Status", "priority": 0},
                {"name": "Roles", "priority": 0}, {"name": "Age", "priority": 0},
                {"name": "Version", "priority": 0}, {"name": "Internal-IP", "priority": 1}
            ],
            "rows": [{"cells": ["myserver", "Ready", "control-plane", "45s", "v1.35.4+k3s1", "10.0.0.1"]}]
        });
        assert_eq!(
            render_table(&table),
            "NAME       STATUS   ROLES           AGE   VERSION\nmyserver   Ready    control-plane   45s   v1.35.4+k3s1\n"
        );
    }
}
