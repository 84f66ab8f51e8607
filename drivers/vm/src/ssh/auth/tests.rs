use std::path::Path;
use std::time::Duration;

use russh::keys::PublicKey;
use russh::server::{self, Auth, VerifiedPublicKey};

use super::super::{connect, HostKeyPolicy, SshTarget};
use super::*;

/// An in-process russh server (not sshd) that accepts one key and one password.
#[derive(Clone)]
struct Server {
    key: PublicKey,
    password: &'static str,
}

impl server::Handler for Server {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if key.public_key.key_data() == self.key.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_password(&mut self, _: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(if password == self.password {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }
}

/// Serves `server` on a loopback port; returns the port.
async fn serve(server: Server, host_key: PrivateKey) -> u16 {
    let config = Arc::new(server::Config {
        keys: vec![host_key],
        auth_rejection_time: Duration::ZERO,
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (config, server) = (config.clone(), server.clone());
            tokio::spawn(async move {
                if let Ok(session) = server::run_stream(config, socket, server).await {
                    let _ = session.await;
                }
            });
        }
    });
    port
}

fn key_file(dir: &Path, name: &str) -> (PathBuf, PublicKey) {
    let key = SshKey::ensure(&dir.join(name), name).unwrap();
    (key.private_path.clone(), key.public_key().clone())
}

#[tokio::test]
async fn methods_are_tried_in_order_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let host = SshKey::ensure(&dir.path().join("host"), "host").unwrap();
    let (good, good_public) = key_file(dir.path(), "good");
    let (bad, _) = key_file(dir.path(), "bad");
    let port = serve(
        Server {
            key: good_public,
            password: "right",
        },
        host.private().as_ref().clone(),
    )
    .await;
    let known_hosts = dir.path().join("known_hosts");
    let target = |auth: Vec<SshAuth>| {
        SshTarget::with_auth(
            "127.0.0.1",
            port,
            "pi",
            auth,
            HostKeyPolicy::KnownHosts {
                file: known_hosts.clone(),
                accept_new: true,
            },
        )
    };
    let file = |path: &PathBuf| SshAuth::KeyFile {
        path: path.clone(),
        passphrase: None,
    };

    // A refused key and a wrong password, then a right key.
    let ok = target(vec![
        file(&bad),
        SshAuth::Password("wrong".into()),
        file(&good),
    ]);
    connect(&ok).await.unwrap();
    // Trust on first use recorded the key; the second connect checks it.
    let recorded = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(recorded.starts_with(&format!("[127.0.0.1]:{port} ssh-ed25519 ")));
    connect(&target(vec![SshAuth::Password("right".into())]))
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), recorded);

    // Everything refused: the error lists what was tried.
    match connect(&target(vec![file(&bad), SshAuth::Password("wrong".into())])).await {
        Err(SshError::Auth { user, tried, .. }) => {
            assert_eq!(user, "pi");
            assert_eq!(
                tried,
                [
                    format!("key file {}", bad.display()),
                    "password".to_string()
                ]
            );
        }
        other => panic!("expected a refused login, got {:?}", other.map(|_| ())),
    }

    // An unusable key file alone is its own, permanent error; next to another method, it is
    // one more line in the list.
    let missing = dir.path().join("missing");
    match connect(&target(vec![file(&missing)])).await {
        Err(e @ SshError::KeyFile { .. }) => assert!(e.is_permanent()),
        other => panic!("expected a key file error, got {:?}", other.map(|_| ())),
    }
    connect(&target(vec![file(&missing), file(&good)]))
        .await
        .unwrap();
    match connect(&target(vec![file(&missing), file(&bad)])).await {
        Err(SshError::Auth { tried, .. }) => {
            assert_eq!(tried.len(), 2, "{tried:?}");
            assert!(tried[0].contains("could not read"), "{tried:?}");
        }
        other => panic!("expected a refused login, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn debug_hides_secrets() {
    let text = format!(
        "{:?}",
        vec![
            SshAuth::Password("hunter2".into()),
            SshAuth::KeyFile {
                path: "/k".into(),
                passphrase: Some("sesame".into()),
            },
            SshAuth::Agent,
        ]
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("sesame"), "{text}");
    assert!(text.contains("Password(\"<redacted>\")"), "{text}");
    assert!(text.contains("/k"), "{text}");
}

#[test]
fn key_file_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    match load_key_file(&missing, None) {
        Err(SshError::KeyFile { path, message }) => {
            assert_eq!(path, missing);
            assert!(message.contains("could not read"), "{message}");
        }
        other => panic!("expected a key file error, got {other:?}"),
    }

    let key = SshKey::ensure(dir.path(), "t").unwrap();
    let encrypted = key
        .private()
        .encrypt(&mut getrandom::SysRng, "sesame")
        .unwrap()
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .unwrap();
    let path = dir.path().join("enc");
    std::fs::write(&path, encrypted.as_bytes()).unwrap();
    let e = load_key_file(&path, None).unwrap_err();
    assert!(e.to_string().contains("TIMONEL_SSH_KEY_PASSPHRASE"), "{e}");
    assert!(e.is_permanent());
    let e = load_key_file(&path, Some("wrong")).unwrap_err();
    assert!(e.to_string().contains("passphrase"), "{e}");
    let loaded = load_key_file(&path, Some("sesame")).unwrap();
    assert_eq!(loaded.public_key().key_data(), key.public_key().key_data());

    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "not a key").unwrap();
    let e = load_key_file(&garbage, None).unwrap_err();
    assert!(e.to_string().contains("not a private key"), "{e}");
}
