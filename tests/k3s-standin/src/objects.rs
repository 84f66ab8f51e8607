//! Kubernetes objects the stand-in serves: Nodes, system Pods, Services, Endpoints,
//! Namespaces, and `meta.k8s.io/v1` Tables of them for `kubectl get`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::fsutil;
use crate::logfmt::rfc3339;
use crate::nodes::NodeRecord;

pub const ROLE_PREFIX: &str = "node-role.kubernetes.io/";

/// Go's `duration.HumanDuration`, which kubectl's AGE column uses.
pub fn human_duration(secs: u64) -> String {
    let minutes = secs / 60;
    let hours = secs / 3600;
    if secs < 120 {
        format!("{secs}s")
    } else if minutes < 10 {
        if secs.is_multiple_of(60) {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{}s", secs % 60)
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        if minutes.is_multiple_of(60) {
            format!("{hours}h")
        } else {
            format!("{hours}h{}m", minutes % 60)
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        if hours.is_multiple_of(24) {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, hours % 24)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// A column of a Table.
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub format: &'static str,
    pub priority: u8,
}

const fn col(name: &'static str, kind: &'static str, format: &'static str, priority: u8) -> Column {
    Column {
        name,
        kind,
        format,
        priority,
    }
}

pub const NODE_COLUMNS: &[Column] = &[
    col("Name", "string", "name", 0),
    col("Status", "string", "", 0),
    col("Roles", "string", "", 0),
    col("Age", "string", "", 0),
    col("Version", "string", "", 0),
    col("Internal-IP", "string", "", 1),
    col("External-IP", "string", "", 1),
    col("OS-Image", "string", "", 1),
    col("Kernel-Version", "string", "", 1),
    col("Container-Runtime", "string", "", 1),
];

pub const POD_COLUMNS: &[Column] = &[
    col("Name", "string", "name", 0),
    col("Ready", "string", "", 0),
    col("Status", "string", "", 0),
    col("Restarts", "string", "", 0),
    col("Age", "string", "", 0),
    col("IP", "string", "", 1),
    col("Node", "string", "", 1),
    col("Nominated Node", "string", "", 1),
    col("Readiness Gates", "string", "", 1),
];

pub const NAMESPACE_COLUMNS: &[Column] = &[
    col("Name", "string", "name", 0),
    col("Status", "string", "", 0),
    col("Age", "string", "", 0),
];

pub const SERVICE_COLUMNS: &[Column] = &[
    col("Name", "string", "name", 0),
    col("Type", "string", "", 0),
    col("Cluster-IP", "string", "", 0),
    col("External-IP", "string", "", 0),
    col("Port(s)", "string", "", 0),
    col("Age", "string", "", 0),
    col("Selector", "string", "", 1),
];

pub const ENDPOINTS_COLUMNS: &[Column] = &[
    col("Name", "string", "name", 0),
    col("Endpoints", "string", "", 0),
    col("Age", "string", "", 0),
];

/// Builds a `meta.k8s.io/v1` Table. Each row is (object, cells).
pub fn table(columns: &[Column], rows: Vec<(Value, Vec<Value>)>, resource_version: &str) -> Value {
    let defs: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": c.format,
                "description": "",
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(object, cells)| {
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object.get("metadata").cloned().unwrap_or(Value::Null),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// A `List` of objects.
pub fn list(kind: &str, items: Vec<Value>, resource_version: &str) -> Value {
    json!({
        "kind": kind,
        "apiVersion": "v1",
        "metadata": {"resourceVersion": resource_version},
        "items": items,
    })
}

/// The ROLES column: role labels, sorted, or `<none>`.
pub fn roles_of(labels: &BTreeMap<String, String>) -> String {
    let roles: Vec<&str> = labels
        .keys()
        .filter_map(|k| k.strip_prefix(ROLE_PREFIX))
        .filter(|r| !r.is_empty())
        .collect();
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    }
}

/// The labels k3s nodes carry (docs/k3s-contract.md §5.6) plus the user's `--node-label`s.
pub fn node_labels(rec: &NodeRecord) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for (k, v) in [
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/instance-type", "k3s"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/os", "linux"),
        ("node.kubernetes.io/instance-type", "k3s"),
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    labels.insert("kubernetes.io/hostname".into(), rec.name.clone());
    for role in &rec.roles {
        labels.insert(format!("{ROLE_PREFIX}{role}"), "true".into());
    }
    labels.extend(rec.labels.clone());
    labels
}

fn node_status_word(ready: bool) -> &'static str {
    if ready {
        "Ready"
    } else {
        "NotReady"
    }
}

fn parse_taint(t: &str) -> Value {
    let (kv, effect) = t.split_once(':').unwrap_or((t, "NoSchedule"));
    match kv.split_once('=') {
        Some((k, v)) => json!({"key": k, "value": v, "effect": effect}),
        None => json!({"key": kv, "effect": effect}),
    }
}

/// A Node object.
pub fn node(rec: &NodeRecord, index: usize, now: u64) -> Value {
    let ready = rec.is_ready(now);
    let created = rfc3339(rec.created_at);
    let heartbeat = rfc3339(rec.last_seen.max(rec.created_at));
    let cond = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind,
            "status": status,
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": created,
            "reason": reason,
            "message": message,
        })
    };
    let ready_cond = if ready {
        cond(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        )
    } else if rec.reported_ready {
        cond(
            "Ready",
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        )
    } else {
        cond(
            "Ready",
            "False",
            "KubeletNotReady",
            "container runtime network not ready",
        )
    };
    let capacity = json!({"cpu": "2", "ephemeral-storage": "61202244Ki", "memory": "8148500Ki", "pods": "110"});
    let cidr = format!("10.42.{index}.0/24");
    let mut spec =
        json!({"podCIDR": cidr, "podCIDRs": [cidr], "providerID": format!("k3s://{}", rec.name)});
    if !rec.taints.is_empty() {
        spec["taints"] = Value::Array(rec.taints.iter().map(|t| parse_taint(t)).collect());
    }
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": rec.name,
            "uid": rec.uid,
            "resourceVersion": rec.last_seen.to_string(),
            "creationTimestamp": created,
            "labels": node_labels(rec),
            "annotations": {
                "flannel.alpha.coreos.com/public-ip": rec.internal_ip,
                "k3s.io/internal-ip": rec.internal_ip,
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                ready_cond,
            ],
            "addresses": [
                {"type": "InternalIP", "address": rec.internal_ip},
                {"type": "Hostname", "address": rec.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": rec.kernel_version,
                "osImage": "timonel k3s-standin",
                "containerRuntimeVersion": "containerd://1.7.22-k3s1",
                "kubeletVersion": rec.kubelet_version,
                "kubeProxyVersion": rec.kubelet_version,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    })
}

pub fn node_cells(rec: &NodeRecord, now: u64) -> Vec<Value> {
    vec![
        json!(rec.name),
        json!(node_status_word(rec.is_ready(now))),
        json!(roles_of(&node_labels(rec))),
        json!(human_duration(now.saturating_sub(rec.created_at))),
        json!(rec.kubelet_version),
        json!(rec.internal_ip),
        json!("<none>"),
        json!("timonel k3s-standin"),
        json!(rec.kernel_version),
        json!("containerd://1.7.22-k3s1"),
    ]
}

/// What the system pods depend on.
pub struct ClusterView<'a> {
    pub server_node: &'a str,
    pub disabled: &'a [String],
    pub ready: bool,
    pub started_at: u64,
    pub now: u64,
    /// Varies the generated pod name suffixes per cluster.
    pub seed: &'a str,
}

impl ClusterView<'_> {
    fn enabled(&self, component: &str) -> bool {
        !self.disabled.iter().any(|d| d == component)
    }
}

/// Random-looking but stable name suffixes, in Kubernetes' alphabet.
fn suffix(seed: &str, what: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let digest = fsutil::sha256_hex(format!("{seed}/{what}").as_bytes());
    digest
        .as_bytes()
        .chunks(2)
        .take(len)
        .map(|pair| {
            let v = u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("00"), 16).unwrap_or(0);
            ALPHABET[v as usize % ALPHABET.len()] as char
        })
        .collect()
}

/// One system pod.
struct PodSpec {
    name: String,
    labels: Vec<(&'static str, String)>,
    container: &'static str,
    job: bool,
    ip: String,
}

fn system_pods(view: &ClusterView) -> Vec<PodSpec> {
    let mut pods = Vec::new();
    let deploy = |base: &str| {
        format!(
            "{base}-{}-{}",
            suffix(view.seed, base, 10),
            suffix(view.seed, &format!("{base}/pod"), 5)
        )
    };
    let mut ip = 2;
    let mut next_ip = || {
        ip += 1;
        format!("10.42.0.{ip}")
    };
    if view.enabled("coredns") {
        pods.push(PodSpec {
            name: deploy("coredns"),
            labels: vec![("k8s-app", "kube-dns".into())],
            container: "coredns",
            job: false,
            ip: next_ip(),
        });
    }
    if view.enabled("local-storage") {
        pods.push(PodSpec {
            name: deploy("local-path-provisioner"),
            labels: vec![("app", "local-path-provisioner".into())],
            container: "local-path-provisioner",
            job: false,
            ip: next_ip(),
        });
    }
    if view.enabled("metrics-server") {
        pods.push(PodSpec {
            name: deploy("metrics-server"),
            labels: vec![("k8s-app", "metrics-server".into())],
            container: "metrics-server",
            job: false,
            ip: next_ip(),
        });
    }
    if view.enabled("traefik") {
        for chart in ["traefik-crd", "traefik"] {
            let base = format!("helm-install-{chart}");
            pods.push(PodSpec {
                name: format!("{base}-{}", suffix(view.seed, &base, 5)),
                labels: vec![("helmcharts.helm.cattle.io/chart", chart.to_string())],
                container: "helm",
                job: true,
                ip: next_ip(),
            });
        }
        if view.enabled("servicelb") {
            pods.push(PodSpec {
                name: format!(
                    "svclb-traefik-{}-{}",
                    suffix(view.seed, "svclb", 8),
                    suffix(view.seed, view.server_node, 5)
                ),
                labels: vec![("app", "svclb-traefik".into())],
                container: "lb-tcp-80",
                job: false,
                ip: next_ip(),
            });
        }
        pods.push(PodSpec {
            name: deploy("traefik"),
            labels: vec![("app.kubernetes.io/name", "traefik".into())],
            container: "traefik",
            job: false,
            ip: next_ip(),
        });
    }
    pods
}

fn pod_phase(view: &ClusterView, spec: &PodSpec) -> (&'static str, &'static str, bool) {
    // (phase, STATUS column, container ready)
    match (view.ready, spec.job) {
        (false, _) => ("Pending", "ContainerCreating", false),
        (true, true) => ("Succeeded", "Completed", false),
        (true, false) => ("Running", "Running", true),
    }
}

/// The kube-system pods as (object, cells) pairs.
pub fn pods(view: &ClusterView) -> Vec<(Value, Vec<Value>)> {
    let started = rfc3339(view.started_at);
    system_pods(view)
        .into_iter()
        .map(|spec| {
            let (phase, status_word, ready) = pod_phase(view, &spec);
            let labels: BTreeMap<&str, String> = spec.labels.iter().cloned().collect();
            let running = phase == "Running";
            let state = match phase {
                "Running" => json!({"running": {"startedAt": started}}),
                "Succeeded" => json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": started}}),
                _ => json!({"waiting": {"reason": "ContainerCreating"}}),
            };
            let object = json!({
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "name": spec.name,
                    "namespace": "kube-system",
                    "uid": crate::nodes::uid_for(&spec.name, view.started_at),
                    "creationTimestamp": started,
                    "labels": labels,
                },
                "spec": {
                    "nodeName": view.server_node,
                    "containers": [{"name": spec.container, "image": format!("rancher/mirrored-{}", spec.container)}],
                    "restartPolicy": if spec.job { "OnFailure" } else { "Always" },
                },
                "status": {
                    "phase": phase,
                    "conditions": [
                        {"type": "Ready", "status": if running { "True" } else { "False" }},
                        {"type": "ContainersReady", "status": if running { "True" } else { "False" }},
                        {"type": "PodScheduled", "status": "True"},
                    ],
                    "podIP": if view.ready { json!(spec.ip) } else { Value::Null },
                    "podIPs": if view.ready { json!([{"ip": spec.ip}]) } else { json!([]) },
                    "startTime": started,
                    "containerStatuses": [{
                        "name": spec.container,
                        "ready": ready,
                        "restartCount": 0,
                        "started": running,
                        "state": state,
                        "image": format!("rancher/mirrored-{}", spec.container),
                    }],
                },
            });
            let cells = vec![
                json!(spec.name),
                json!(format!("{}/1", u8::from(ready))),
                json!(status_word),
                json!(0),
                json!(human_duration(view.now.saturating_sub(view.started_at))),
                json!(if view.ready { spec.ip.as_str() } else { "<none>" }),
                json!(view.server_node),
                json!("<none>"),
                json!("<none>"),
            ];
            (object, cells)
        })
        .collect()
}

/// The namespaces of a fresh cluster.
pub fn namespaces(view: &ClusterView) -> Vec<(Value, Vec<Value>)> {
    ["default", "kube-node-lease", "kube-public", "kube-system"]
        .iter()
        .map(|name| {
            let object = json!({
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "uid": crate::nodes::uid_for(name, view.started_at),
                    "creationTimestamp": rfc3339(view.started_at),
                    "labels": {"kubernetes.io/metadata.name": name},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            });
            let cells = vec![
                json!(name),
                json!("Active"),
                json!(human_duration(view.now.saturating_sub(view.started_at))),
            ];
            (object, cells)
        })
        .collect()
}

/// (namespace, name, type, cluster IP, ports (name, port, protocol), selector)
type ServiceSpec = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, u16, &'static str)>,
    Option<(&'static str, &'static str)>,
);

fn service_specs(view: &ClusterView) -> Vec<ServiceSpec> {
    let mut out = vec![(
        "default",
        "kubernetes",
        "ClusterIP",
        "10.43.0.1",
        vec![("https", 443, "TCP")],
        None,
    )];
    if view.enabled("coredns") {
        out.push((
            "kube-system",
            "kube-dns",
            "ClusterIP",
            "10.43.0.10",
            vec![
                ("dns", 53, "UDP"),
                ("dns-tcp", 53, "TCP"),
                ("metrics", 9153, "TCP"),
            ],
            Some(("k8s-app", "kube-dns")),
        ));
    }
    if view.enabled("metrics-server") {
        out.push((
            "kube-system",
            "metrics-server",
            "ClusterIP",
            "10.43.148.77",
            vec![("https", 443, "TCP")],
            Some(("k8s-app", "metrics-server")),
        ));
    }
    if view.enabled("traefik") {
        out.push((
            "kube-system",
            "traefik",
            "LoadBalancer",
            "10.43.21.190",
            vec![("web", 80, "TCP"), ("websecure", 443, "TCP")],
            Some(("app.kubernetes.io/name", "traefik")),
        ));
    }
    out
}

/// Services, optionally only in one namespace.
pub fn services(view: &ClusterView, namespace: Option<&str>) -> Vec<(Value, Vec<Value>)> {
    service_specs(view)
        .into_iter()
        .filter(|s| namespace.is_none_or(|ns| ns == s.0))
        .map(|(ns, name, kind, ip, ports, selector)| {
            let port_objs: Vec<Value> = ports
                .iter()
                .map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto, "targetPort": p}))
                .collect();
            let port_text: Vec<String> = ports.iter().map(|(_, p, proto)| format!("{p}/{proto}")).collect();
            let selector_json = selector.map(|(k, v)| json!({k: v}));
            let object = json!({
                "kind": "Service",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "uid": crate::nodes::uid_for(name, view.started_at),
                    "creationTimestamp": rfc3339(view.started_at),
                },
                "spec": {
                    "type": kind,
                    "clusterIP": ip,
                    "clusterIPs": [ip],
                    "ports": port_objs,
                    "selector": selector_json,
                },
                "status": {"loadBalancer": {}},
            });
            let cells = vec![
                json!(name),
                json!(kind),
                json!(ip),
                json!(if kind == "LoadBalancer" { "<pending>" } else { "<none>" }),
                json!(port_text.join(",")),
                json!(human_duration(view.now.saturating_sub(view.started_at))),
                json!(selector.map(|(k, v)| format!("{k}={v}")).unwrap_or_else(|| "<none>".into())),
            ];
            (object, cells)
        })
        .collect()
}

/// The Endpoints of `kube-system/kube-dns` (and `default/kubernetes`).
pub fn endpoints(
    view: &ClusterView,
    api_ip: &str,
    api_port: u16,
    namespace: Option<&str>,
) -> Vec<(Value, Vec<Value>)> {
    let mut out = Vec::new();
    let started = rfc3339(view.started_at);
    let age = human_duration(view.now.saturating_sub(view.started_at));
    if namespace.is_none_or(|ns| ns == "default") {
        let object = json!({
            "kind": "Endpoints",
            "apiVersion": "v1",
            "metadata": {"name": "kubernetes", "namespace": "default", "creationTimestamp": started},
            "subsets": [{"addresses": [{"ip": api_ip}], "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}]}],
        });
        out.push((
            object,
            vec![
                json!("kubernetes"),
                json!(format!("{api_ip}:{api_port}")),
                json!(age),
            ],
        ));
    }
    if namespace.is_none_or(|ns| ns == "kube-system") && view.enabled("coredns") {
        let pods = system_pods(view);
        let Some(dns) = pods.iter().find(|p| p.container == "coredns") else {
            return out;
        };
        let address = json!({
            "ip": dns.ip,
            "nodeName": view.server_node,
            "targetRef": {"kind": "Pod", "namespace": "kube-system", "name": dns.name},
        });
        let ports = json!([
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "metrics", "port": 9153, "protocol": "TCP"},
        ]);
        let subset = if view.ready {
            json!({"addresses": [address], "ports": ports})
        } else {
            json!({"notReadyAddresses": [address], "ports": ports})
        };
        let object = json!({
            "kind": "Endpoints",
            "apiVersion": "v1",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "creationTimestamp": started, "labels": {"k8s-app": "kube-dns"}},
            "subsets": [subset],
        });
        let text = if view.ready {
            format!("{0}:53,{0}:53,{0}:9153", dns.ip)
        } else {
            "<none>".to_string()
        };
        out.push((object, vec![json!("kube-dns"), json!(text), json!(age)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(roles: &[&str]) -> NodeRecord {
        NodeRecord {
            name: "myserver".into(),
            uid: "u".into(),
            password_hash: String::new(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            internal_ip: "10.0.0.2".into(),
            labels: BTreeMap::new(),
            taints: vec![],
            created_at: 1000,
            kubelet_version: "v1.35.4+k3s1".into(),
            kernel_version: String::new(),
            last_seen: 1040,
            reported_ready: true,
        }
    }

    #[test]
    fn human_durations_match_go() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(10 * 3600), "10h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(30 * 86400), "30d");
    }

    #[test]
    fn node_table_has_kubectl_columns() {
        let r = rec(&["control-plane", "etcd", "master"]);
        let t = table(
            NODE_COLUMNS,
            vec![(node(&r, 0, 1045), node_cells(&r, 1045))],
            "7",
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["priority"] == 0)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Status", "Roles", "Age", "Version"]);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "myserver");
        assert_eq!(cells[1], "Ready");
        assert_eq!(cells[2], "control-plane,etcd,master");
        assert_eq!(cells[3], "45s");
        assert_eq!(cells[4], "v1.35.4+k3s1");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "myserver");
        // Stale heartbeat → NotReady.
        assert_eq!(node_cells(&r, 1040 + 60)[1], "NotReady");
        assert_eq!(roles_of(&node_labels(&rec(&[]))), "<none>");
    }

    #[test]
    fn node_object_labels_and_status() {
        let n = node(&rec(&["control-plane"]), 0, 1045);
        let labels = &n["metadata"]["labels"];
        assert_eq!(labels["node.kubernetes.io/instance-type"], "k3s");
        assert_eq!(labels["node-role.kubernetes.io/control-plane"], "true");
        assert_eq!(labels["kubernetes.io/hostname"], "myserver");
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], "v1.35.4+k3s1");
        assert_eq!(n["status"]["addresses"][0]["type"], "InternalIP");
        let conds = n["status"]["conditions"].as_array().unwrap();
        assert!(conds
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"));
    }

    #[test]
    fn disabled_components_have_no_pods() {
        let disabled = vec!["traefik".to_string(), "metrics-server".to_string()];
        let view = ClusterView {
            server_node: "s",
            disabled: &disabled,
            ready: true,
            started_at: 0,
            now: 10,
            seed: "x",
        };
        let names: Vec<String> = pods(&view)
            .iter()
            .map(|(o, _)| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names[0].starts_with("coredns-"));
        assert!(names[1].starts_with("local-path-provisioner-"));
        let eps = endpoints(&view, "10.0.0.2", 6443, Some("kube-system"));
        assert_eq!(
            eps[0].0["subsets"][0]["addresses"][0]["targetRef"]["name"],
            names[0].as_str()
        );
    }
}
