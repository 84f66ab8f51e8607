//! The Kubernetes API paths: discovery, `/version`, health, and the read-mostly
//! resources `kubectl get` needs. Authentication happens before this module.

use serde_json::{json, Value};

use crate::http::{Request, Response};
use crate::logfmt::now_unix;
use crate::nodes::{NodeError, Nodes};
use crate::objects::{self, ClusterView, Column};

/// What the API handlers read.
pub struct ApiContext<'a> {
    pub version: &'a str,
    pub commit: &'a str,
    pub nodes: &'a Nodes,
    pub view: ClusterView<'a>,
    pub api_ip: &'a str,
    pub api_port: u16,
}

/// A JSON `Status` failure.
pub fn status(code: u16, reason: &str, message: &str) -> Response {
    Response::json(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }),
    )
}

pub fn unauthorized() -> Response {
    status(401, "Unauthorized", "Unauthorized")
}

fn not_found_resource() -> Response {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn wants_table(req: &Request) -> bool {
    req.header("accept").is_some_and(|a| a.contains("as=Table"))
}

fn respond_collection(
    req: &Request,
    kind: &str,
    columns: &[Column],
    rows: Vec<(Value, Vec<Value>)>,
) -> Response {
    let rv = now_unix().to_string();
    if wants_table(req) {
        Response::json(200, &objects::table(columns, rows, &rv))
    } else {
        Response::json(
            200,
            &objects::list(kind, rows.into_iter().map(|(o, _)| o).collect(), &rv),
        )
    }
}

fn respond_one(req: &Request, columns: &[Column], row: (Value, Vec<Value>)) -> Response {
    if wants_table(req) {
        let rv = now_unix().to_string();
        Response::json(200, &objects::table(columns, vec![row], &rv))
    } else {
        Response::json(200, &row.0)
    }
}

fn health(req: &Request, path: &str) -> Response {
    if req.query_has("verbose") {
        let checks = [
            "ping",
            "log",
            "etcd",
            "informer-sync",
            "poststarthook/start-apiextensions-informers",
        ];
        let mut body: String = checks.iter().map(|c| format!("[+]{c} ok\n")).collect();
        body.push_str(&format!("{} check passed\n", path.trim_start_matches('/')));
        Response::text(200, &body)
    } else {
        Response::text(200, "ok")
    }
}

fn version_info(ctx: &ApiContext) -> Value {
    let core = ctx.version.trim_start_matches('v');
    let mut parts = core.split(['.', '+', '-']);
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("0");
    json!({
        "major": major,
        "minor": minor,
        "gitVersion": ctx.version,
        "gitCommit": ctx.commit,
        "gitTreeState": "clean",
        "buildDate": "2024-10-22T00:00:00Z",
        "goVersion": "go1.22.8",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_resources() -> Value {
    let res = |name: &str,
               singular: &str,
               kind: &str,
               namespaced: bool,
               short: &[&str],
               verbs: &[&str]| {
        json!({
            "name": name,
            "singularName": singular,
            "namespaced": namespaced,
            "kind": kind,
            "verbs": verbs,
            "shortNames": short,
        })
    };
    let read = ["get", "list"];
    json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            res("endpoints", "endpoints", "Endpoints", true, &["ep"], &read),
            res("namespaces", "namespace", "Namespace", false, &["ns"], &read),
            res("nodes", "node", "Node", false, &["no"], &["delete", "get", "list"]),
            res("pods", "pod", "Pod", true, &["po"], &read),
            res("services", "service", "Service", true, &["svc"], &read),
        ],
    })
}

fn node_error(e: NodeError) -> Response {
    status(503, "ServiceUnavailable", &e.to_string())
}

fn nodes(ctx: &ApiContext, req: &Request, name: Option<&str>) -> Response {
    let mut records = match ctx.nodes.list() {
        Ok(r) => r,
        Err(e) => return node_error(e),
    };
    records.sort_by_key(|r| (r.created_at, r.name.clone()));
    let now = now_unix();
    let rows = |recs: &[(usize, &crate::nodes::NodeRecord)]| -> Vec<(Value, Vec<Value>)> {
        recs.iter()
            .map(|(i, r)| (objects::node(r, *i, now), objects::node_cells(r, now)))
            .collect()
    };
    let indexed: Vec<(usize, &crate::nodes::NodeRecord)> = records.iter().enumerate().collect();
    let Some(name) = name else {
        if req.method != "GET" {
            return status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            );
        }
        let mut rows = rows(&indexed);
        rows.sort_by(|a, b| a.1[0].as_str().cmp(&b.1[0].as_str()));
        return respond_collection(req, "NodeList", objects::NODE_COLUMNS, rows);
    };
    let Some(found) = indexed.iter().find(|(_, r)| r.name == name) else {
        return Response::json(
            404,
            &json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("nodes \"{name}\" not found"), "reason": "NotFound",
                "details": {"name": name, "kind": "nodes"}, "code": 404,
            }),
        );
    };
    match req.method.as_str() {
        "GET" => {
            let row = rows(&[*found]).remove(0);
            respond_one(req, objects::NODE_COLUMNS, row)
        }
        "DELETE" => match ctx.nodes.delete(name) {
            Ok(_) => Response::json(
                200,
                &json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "kind": "nodes", "uid": found.1.uid},
                }),
            ),
            Err(e) => node_error(e),
        },
        _ => status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
    }
}

fn named(
    req: &Request,
    kind: &str,
    columns: &[Column],
    rows: Vec<(Value, Vec<Value>)>,
    name: Option<&str>,
    resource: &str,
) -> Response {
    if req.method != "GET" {
        return status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
    }
    match name {
        None => respond_collection(req, kind, columns, rows),
        Some(n) => match rows.into_iter().find(|(o, _)| o["metadata"]["name"] == n) {
            Some(row) => respond_one(req, columns, row),
            None => status(404, "NotFound", &format!("{resource} \"{n}\" not found")),
        },
    }
}

/// Handles an authenticated request to an API path.
pub fn handle(ctx: &ApiContext, req: &Request) -> Response {
    let path = req.path.trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let view = &ctx.view;
    match segs.as_slice() {
        ["version"] => Response::json(200, &version_info(ctx)),
        [p] | [p, _] if ["readyz", "livez", "healthz"].contains(p) => health(req, path),
        ["api"] => Response::json(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("{}:{}", ctx.api_ip, ctx.api_port)}],
            }),
        ),
        ["apis"] => Response::json(
            200,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        ),
        ["api", "v1"] => Response::json(200, &api_resources()),
        ["api", "v1", "nodes"] => nodes(ctx, req, None),
        ["api", "v1", "nodes", name] => nodes(ctx, req, Some(name)),
        ["api", "v1", "namespaces"] => named(
            req,
            "NamespaceList",
            objects::NAMESPACE_COLUMNS,
            objects::namespaces(view),
            None,
            "namespaces",
        ),
        ["api", "v1", "namespaces", name] => named(
            req,
            "NamespaceList",
            objects::NAMESPACE_COLUMNS,
            objects::namespaces(view),
            Some(name),
            "namespaces",
        ),
        ["api", "v1", "pods"] => named(
            req,
            "PodList",
            objects::POD_COLUMNS,
            objects::pods(view),
            None,
            "pods",
        ),
        ["api", "v1", "namespaces", ns, "pods"] => {
            let rows = if *ns == "kube-system" {
                objects::pods(view)
            } else {
                Vec::new()
            };
            named(req, "PodList", objects::POD_COLUMNS, rows, None, "pods")
        }
        ["api", "v1", "namespaces", ns, "pods", name] => {
            let rows = if *ns == "kube-system" {
                objects::pods(view)
            } else {
                Vec::new()
            };
            named(
                req,
                "PodList",
                objects::POD_COLUMNS,
                rows,
                Some(name),
                "pods",
            )
        }
        ["api", "v1", "services"] => named(
            req,
            "ServiceList",
            objects::SERVICE_COLUMNS,
            objects::services(view, None),
            None,
            "services",
        ),
        ["api", "v1", "namespaces", ns, "services"] => named(
            req,
            "ServiceList",
            objects::SERVICE_COLUMNS,
            objects::services(view, Some(ns)),
            None,
            "services",
        ),
        ["api", "v1", "namespaces", ns, "services", name] => named(
            req,
            "ServiceList",
            objects::SERVICE_COLUMNS,
            objects::services(view, Some(ns)),
            Some(name),
            "services",
        ),
        ["api", "v1", "endpoints"] => named(
            req,
            "EndpointsList",
            objects::ENDPOINTS_COLUMNS,
            objects::endpoints(view, ctx.api_ip, ctx.api_port, None),
            None,
            "endpoints",
        ),
        ["api", "v1", "namespaces", ns, "endpoints"] => named(
            req,
            "EndpointsList",
            objects::ENDPOINTS_COLUMNS,
            objects::endpoints(view, ctx.api_ip, ctx.api_port, Some(ns)),
            None,
            "endpoints",
        ),
        ["api", "v1", "namespaces", ns, "endpoints", name] => named(
            req,
            "EndpointsList",
            objects::ENDPOINTS_COLUMNS,
            objects::endpoints(view, ctx.api_ip, ctx.api_port, Some(ns)),
            Some(name),
            "endpoints",
        ),
        _ => not_found_resource(),
    }
}

/// Whether a path belongs to the (authenticated) Kubernetes API rather than the supervisor.
pub fn is_api_path(path: &str) -> bool {
    !(path == "/ping"
        || path == "/cacerts"
        || path.starts_with("/v1-k3s/")
        || path.starts_with("/static/"))
}
