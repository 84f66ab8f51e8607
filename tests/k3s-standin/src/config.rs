//! The k3s config file: `config.yaml` plus `config.yaml.d/*.yaml` drop-ins read in
//! alphabetical order, `key+:` appending, and the precedence CLI > file > env.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::cli::{self, FlagSpec, Kind, Role, Settings, UsageError, Value};

/// The default config file path.
pub const DEFAULT_CONFIG: &str = "/etc/rancher/k3s/config.yaml";

/// Everything that can go wrong reading the config.
#[derive(Debug)]
pub enum ConfigError {
    Usage(UsageError),
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    Parse {
        path: PathBuf,
        message: String,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Usage(u) => write!(f, "{u}"),
            ConfigError::Read { path, source } => {
                write!(
                    f,
                    "failed to read config file `{}`: {source}",
                    path.display()
                )
            }
            ConfigError::Parse { path, message } => {
                write!(
                    f,
                    "failed to parse config file `{}`: {message}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<UsageError> for ConfigError {
    fn from(e: UsageError) -> Self {
        ConfigError::Usage(e)
    }
}

/// The config file and its drop-ins, in the order they apply.
pub fn config_files(config: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if config.is_file() {
        files.push(config.to_path_buf());
    }
    let mut dropin_dir = config.as_os_str().to_owned();
    dropin_dir.push(".d");
    if let Ok(entries) = fs::read_dir(PathBuf::from(dropin_dir)) {
        let mut dropins: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml") | Some("yml")
                    )
            })
            .collect();
        dropins.sort();
        files.extend(dropins);
    }
    files
}

fn scalar_to_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Null => Some(String::new()),
        _ => None,
    }
}

fn to_flag_value(spec: &FlagSpec, v: &serde_json::Value) -> Result<Value, UsageError> {
    let bad = || UsageError(format!("invalid value for -{} in config file", spec.name));
    match spec.kind {
        Kind::Bool => match v {
            serde_json::Value::Bool(b) => Ok(Value::Bool(*b)),
            other => {
                let s = scalar_to_string(other).ok_or_else(bad)?;
                Ok(Value::Bool(cli::parse_bool(spec.name, &s)?))
            }
        },
        Kind::Str => Ok(Value::Str(scalar_to_string(v).ok_or_else(bad)?)),
        Kind::List => match v {
            serde_json::Value::Array(items) => Ok(Value::List(
                items
                    .iter()
                    .map(|i| scalar_to_string(i).ok_or_else(bad))
                    .collect::<Result<_, _>>()?,
            )),
            other => Ok(Value::List(vec![scalar_to_string(other).ok_or_else(bad)?])),
        },
    }
}

/// Merges YAML documents (already read, in order) into flag values.
pub fn merge_documents(
    specs: &[FlagSpec],
    docs: &[(PathBuf, String)],
) -> Result<BTreeMap<String, Value>, ConfigError> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for (path, text) in docs {
        if text.trim().is_empty() {
            continue;
        }
        let map: serde_json::Map<String, serde_json::Value> = serde_saphyr::from_str(text)
            .map_err(|e| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?;
        for (key, raw) in &map {
            let (name, append) = match key.strip_suffix('+') {
                Some(base) => (base, true),
                None => (key.as_str(), false),
            };
            let Some(spec) = cli::lookup(specs, name).filter(|s| s.name == name) else {
                // Like k3s, a key meant for the other subcommand (e.g. a server-only key
                // read by an agent) is skipped; a key no subcommand knows is an error.
                let known_elsewhere = [Role::Server, Role::Agent]
                    .iter()
                    .any(|r| cli::specs(*r).iter().any(|s| s.name == name));
                if known_elsewhere {
                    continue;
                }
                return Err(cli::not_defined(name).into());
            };
            let value = to_flag_value(&spec, raw)?;
            match (append, out.get_mut(spec.name), value) {
                (true, Some(Value::List(existing)), Value::List(more)) => existing.extend(more),
                (_, _, value) => {
                    out.insert(spec.name.to_string(), value);
                }
            }
        }
    }
    Ok(out)
}

/// Resolves the settings for a subcommand: env, then the config file(s), then the CLI.
pub fn resolve(
    specs: &[FlagSpec],
    parsed: &cli::Parsed,
    get_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let env = cli::from_env(specs, get_env)?;
    let explicit = match parsed.flags.get("config") {
        Some(Value::Str(p)) => Some(p.clone()),
        _ => match env.get("config") {
            Some(Value::Str(p)) => Some(p.clone()),
            _ => None,
        },
    };
    let config_path = PathBuf::from(explicit.clone().unwrap_or_else(|| DEFAULT_CONFIG.into()));
    let mut dropin_dir = config_path.as_os_str().to_owned();
    dropin_dir.push(".d");
    if explicit.is_some()
        && !config_path.exists()
        && !Path::new(&dropin_dir).is_dir()
        && config_path != Path::new(DEFAULT_CONFIG)
    {
        return Err(ConfigError::Read {
            path: config_path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let mut docs = Vec::new();
    for path in config_files(&config_path) {
        let text = fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        docs.push((path, text));
    }
    let file = merge_documents(specs, &docs)?;
    let mut values = env;
    values.extend(file);
    // A list on the command line replaces the file's list.
    values.extend(parsed.flags.clone());
    Ok(Settings { values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::specs;

    fn docs(items: &[&str]) -> Vec<(PathBuf, String)> {
        items
            .iter()
            .enumerate()
            .map(|(i, t)| (PathBuf::from(format!("{i}.yaml")), t.to_string()))
            .collect()
    }

    #[test]
    fn later_files_replace_and_plus_appends() {
        let merged = merge_documents(
            &specs(Role::Server),
            &docs(&[
                "write-kubeconfig-mode: \"0644\"\ntls-san: [a.local]\nnode-label: [\"x=1\"]\ncluster-init: true\n",
                "tls-san+: [b.local]\nnode-label: [\"y=2\"]\nhttps-listen-port: 7443\n",
            ]),
        )
        .unwrap();
        assert_eq!(merged["write-kubeconfig-mode"], Value::Str("0644".into()));
        assert_eq!(
            merged["tls-san"],
            Value::List(vec!["a.local".into(), "b.local".into()])
        );
        assert_eq!(merged["node-label"], Value::List(vec!["y=2".into()]));
        assert_eq!(merged["cluster-init"], Value::Bool(true));
        assert_eq!(merged["https-listen-port"], Value::Str("7443".into()));
    }

    #[test]
    fn other_subcommand_keys_are_skipped() {
        let merged = merge_documents(
            &specs(Role::Agent),
            &docs(&["write-kubeconfig-mode: \"0644\"\nnode-name: a1\n"]),
        )
        .unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged["node-name"], Value::Str("a1".into()));
    }

    #[test]
    fn unknown_key_fails_like_unknown_flag() {
        let err = merge_documents(&specs(Role::Server), &docs(&["foo: bar\n"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Incorrect Usage: flag provided but not defined: -foo"
        );
        // Short names are not config keys.
        assert!(merge_documents(&specs(Role::Server), &docs(&["o: /x\n"])).is_err());
    }

    #[test]
    fn files_dropins_env_and_cli_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        fs::write(
            &config,
            "token: from-file\ntls-san: [file.local]\ndisable: [traefik]\n",
        )
        .unwrap();
        let d = dir.path().join("config.yaml.d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("20-b.yaml"), "tls-san+: [b.local]\n").unwrap();
        fs::write(
            d.join("10-a.yaml"),
            "tls-san+: [a.local]\nnode-name: filenode\n",
        )
        .unwrap();
        fs::write(d.join("ignored.txt"), "foo: bar\n").unwrap();

        let s = specs(Role::Server);
        let cli = cli::parse(
            &s,
            &[
                "--config".to_string(),
                config.display().to_string(),
                "--disable=metrics-server".to_string(),
            ],
        )
        .unwrap();
        let env = |k: &str| match k {
            "K3S_TOKEN" => Some("from-env".to_string()),
            "K3S_NODE_NAME" => Some("envnode".to_string()),
            "K3S_DATA_DIR" => Some("/env/data".to_string()),
            _ => None,
        };
        let settings = resolve(&s, &cli, &env).unwrap();
        assert_eq!(settings.str("token"), Some("from-file"));
        assert_eq!(settings.str("node-name"), Some("filenode"));
        assert_eq!(settings.str("data-dir"), Some("/env/data"));
        assert_eq!(
            settings.list("tls-san"),
            vec!["file.local", "a.local", "b.local"]
        );
        assert_eq!(settings.list("disable"), vec!["metrics-server"]);
    }

    #[test]
    fn explicit_missing_config_fails() {
        let s = specs(Role::Server);
        let cli = cli::parse(&s, &["-c".to_string(), "/nonexistent/x.yaml".to_string()]).unwrap();
        assert!(resolve(&s, &cli, &|_| None).is_err());
    }
}
