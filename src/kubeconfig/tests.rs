//! Unit tests of the document edits and the k3s parser (file-level tests: tests/kubeconfig.rs).

use serde_json::{json, Map, Value};

use super::merge::{apply_merge, apply_remove, new_document, EditError};
use super::*;

const K3S_YAML: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EtREFUQQ==
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
";

fn creds(server: &str) -> ClusterCredentials {
    ClusterCredentials {
        server: server.to_string(),
        ca_data: "Q0E=".to_string(),
        client_cert_data: "Q0VSVA==".to_string(),
        client_key_data: "S0VZ".to_string(),
    }
}

fn doc(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[test]
fn parses_k3s_yaml() {
    let c = parse_k3s_yaml(K3S_YAML).unwrap();
    assert_eq!(c.server, "https://127.0.0.1:6443");
    assert_eq!(c.ca_data, "Q0EtREFUQQ==");
    assert_eq!(c.client_cert_data, "Q0VSVA==");
    assert_eq!(c.client_key_data, "S0VZ");
    assert!(!format!("{c:?}").contains("S0VZ"), "Debug leaks the key");
}

#[test]
fn parses_k3s_yaml_in_another_key_order_with_bom_and_without_current_context() {
    let text = "\u{feff}kind: Config\nusers:\n- user: {client-key-data: S0VZ, client-certificate-data: Q0VSVA==}\n  name: default\n\
                clusters:\n- name: default\n  cluster: {server: 'https://[::1]:6443', certificate-authority-data: Q0E=}\n\
                contexts:\n- name: default\n  context: {user: default, cluster: default}\n";
    let c = parse_k3s_yaml(text).unwrap();
    assert_eq!(c.server, "https://[::1]:6443");
}

#[test]
fn k3s_yaml_with_file_paths_is_a_clear_error() {
    let text = K3S_YAML.replace(
        "certificate-authority-data: Q0EtREFUQQ==",
        "certificate-authority: /var/lib/rancher/k3s/server/tls/server-ca.crt",
    );
    let err = parse_k3s_yaml(&text).unwrap_err();
    assert!(
        matches!(&err, KubeconfigError::K3sPathReference { field } if field == "certificate-authority"),
        "{err:?}"
    );
    let text = K3S_YAML.replace("client-key-data: S0VZ", "client-key: /k.pem");
    assert!(matches!(
        parse_k3s_yaml(&text),
        Err(KubeconfigError::K3sPathReference { .. })
    ));
}

#[test]
fn k3s_yaml_errors() {
    assert!(matches!(
        parse_k3s_yaml("a: ["),
        Err(KubeconfigError::K3sParse { .. })
    ));
    assert!(matches!(
        parse_k3s_yaml(""),
        Err(KubeconfigError::K3sMissing { .. })
    ));
    let no_user = K3S_YAML.replace("- name: default\n  user:", "- name: other\n  user:");
    assert!(matches!(
        parse_k3s_yaml(&no_user),
        Err(KubeconfigError::K3sMissing { .. })
    ));
    let bad = K3S_YAML.replace("S0VZ", "not*base64");
    assert!(matches!(
        parse_k3s_yaml(&bad),
        Err(KubeconfigError::K3sBase64 { .. })
    ));
}

#[test]
fn merge_into_empty_document_writes_kubectl_shaped_entries() {
    let mut d = new_document(None);
    let report = apply_merge(&mut d, "timonel", &creds("https://127.0.0.1:1"), true).unwrap();
    assert!(!report.existed);
    assert_eq!(report.previous_context, None);
    let expected = json!({
        "apiVersion": "v1",
        "clusters": [{"cluster": {
            "certificate-authority-data": "Q0E=",
            "extensions": [{"extension": {"profile": "timonel", "provider": "timonel"}, "name": "timonel"}],
            "server": "https://127.0.0.1:1"}, "name": "timonel"}],
        "contexts": [{"context": {
            "cluster": "timonel",
            "extensions": [{"extension": {"profile": "timonel", "provider": "timonel"}, "name": "timonel"}],
            "user": "timonel"}, "name": "timonel"}],
        "kind": "Config",
        "preferences": {},
        "users": [{"name": "timonel", "user": {
            "client-certificate-data": "Q0VSVA==",
            "client-key-data": "S0VZ",
            "extensions": [{"extension": {"profile": "timonel", "provider": "timonel"}, "name": "timonel"}]}}],
        "current-context": "timonel",
    });
    assert_eq!(Value::Object(d.clone()), expected);
    // Key order of the new entries is kubectl's (alphabetical).
    let cluster_keys: Vec<&String> = d["clusters"][0]["cluster"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        cluster_keys,
        ["certificate-authority-data", "extensions", "server"]
    );
    let user_keys: Vec<&String> = d["users"][0].as_object().unwrap().keys().collect();
    assert_eq!(user_keys, ["name", "user"]);
}

#[test]
fn update_keeps_user_fields_and_drops_conflicting_ones() {
    let mut d = new_document(None);
    apply_merge(&mut d, "p", &creds("https://127.0.0.1:1"), true).unwrap();
    d["contexts"][0]["context"]["namespace"] = json!("dev");
    d["clusters"][0]["cluster"]["insecure-skip-tls-verify"] = json!(true);
    d["clusters"][0]["cluster"]["extensions"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({"name": "other", "extension": {"x": 1}}));
    let report = apply_merge(&mut d, "p", &creds("https://127.0.0.1:2"), true).unwrap();
    assert!(report.existed);
    assert_eq!(d["contexts"][0]["context"]["namespace"], "dev");
    assert_eq!(d["clusters"][0]["cluster"]["server"], "https://127.0.0.1:2");
    assert!(d["clusters"][0]["cluster"]
        .get("insecure-skip-tls-verify")
        .is_none());
    let exts = d["clusters"][0]["cluster"]["extensions"]
        .as_array()
        .unwrap();
    assert_eq!(exts.len(), 2);
    assert_eq!(exts[0]["name"], "other");
    assert_eq!(d["clusters"].as_array().unwrap().len(), 1);
}

#[test]
fn foreign_entry_is_refused_and_document_unchanged() {
    for kind in EntryKind::ALL {
        let mut d = new_document(None);
        let entry = match kind {
            EntryKind::User => json!({"name": "p", "user": {"token": "t"}}),
            EntryKind::Cluster => json!({"name": "p", "cluster": {"server": "https://x"}}),
            EntryKind::Context => json!({"name": "p", "context": {"cluster": "x", "user": "x"}}),
        };
        d[kind.list_key()] = json!([entry]);
        let before = d.clone();
        let err = apply_merge(&mut d, "p", &creds("https://s"), true).unwrap_err();
        assert!(matches!(err, EditError::Foreign(k) if k == kind), "{err:?}");
        assert_eq!(d, before);
        // remove leaves it alone too
        let report = apply_remove(&mut d, "p").unwrap();
        assert_eq!(report.kept_foreign, vec![kind]);
        assert!(report.removed.is_empty());
        assert_eq!(d, before);
    }
}

#[test]
fn previous_context_is_recorded_and_restored() {
    let mut d = new_document(None);
    d["contexts"] = json!([{"context": {"cluster": "a", "user": "a"}, "name": "kind-a"}]);
    d.insert("current-context".into(), json!("kind-a"));
    let report = apply_merge(&mut d, "p", &creds("https://s"), true).unwrap();
    assert_eq!(report.previous_context.as_deref(), Some("kind-a"));
    // Merging again keeps the record (current is ours now).
    let again = apply_merge(&mut d, "p", &creds("https://s"), true).unwrap();
    assert_eq!(again.previous_context, None);
    let ours = &d["contexts"][1]["context"]["extensions"][0]["extension"];
    assert_eq!(ours["previous-context"], "kind-a");
    let report = apply_remove(&mut d, "p").unwrap();
    assert_eq!(
        report.current_context,
        ContextChange::Restored("kind-a".into())
    );
    assert_eq!(d["current-context"], "kind-a");
    assert_eq!(report.removed, EntryKind::ALL.to_vec());
}

#[test]
fn current_context_unset_when_previous_is_gone_and_kept_when_not_ours() {
    let mut d = new_document(None);
    d["contexts"] = json!([{"context": {}, "name": "old"}]);
    d.insert("current-context".into(), json!("old"));
    apply_merge(&mut d, "p", &creds("https://s"), true).unwrap();
    d["contexts"].as_array_mut().unwrap().remove(0);
    let report = apply_remove(&mut d, "p").unwrap();
    assert_eq!(report.current_context, ContextChange::Unset);
    assert!(d.get("current-context").is_none());

    let mut d = new_document(None);
    d["contexts"] = json!([{"context": {}, "name": "old"}]);
    d.insert("current-context".into(), json!("old"));
    apply_merge(&mut d, "p", &creds("https://s"), false).unwrap();
    assert_eq!(d["current-context"], "old");
    let report = apply_remove(&mut d, "p").unwrap();
    assert_eq!(report.current_context, ContextChange::Kept);
    assert_eq!(d["current-context"], "old");
}

#[test]
fn null_lists_are_accepted_and_bad_shapes_rejected() {
    let mut d = doc(json!({"apiVersion": "v1", "clusters": null, "contexts": null, "users": null}));
    apply_merge(&mut d, "p", &creds("https://s"), true).unwrap();
    assert_eq!(d["clusters"].as_array().unwrap().len(), 1);
    for bad in [
        json!({"clusters": {"a": 1}}),
        json!({"users": ["x"]}),
        json!({"current-context": 3}),
    ] {
        let mut d = doc(bad);
        assert!(matches!(
            apply_merge(&mut d, "p", &creds("https://s"), true),
            Err(EditError::Invalid(_))
        ));
    }
}

#[test]
fn standalone_is_a_complete_kubeconfig() {
    let yaml = standalone("timonel", &creds("https://127.0.0.1:7443"));
    let parsed = parse_k3s_yaml(&yaml).unwrap();
    assert_eq!(parsed, creds("https://127.0.0.1:7443"));
    assert!(yaml.starts_with("apiVersion: v1\n"), "{yaml}");
    assert!(yaml.contains("current-context: timonel\n"), "{yaml}");
    assert!(yaml.contains("\n- cluster:\n"), "{yaml}");
}
