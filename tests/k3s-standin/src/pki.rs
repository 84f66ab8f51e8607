//! Certificates: the k3s CAs under `${data-dir}/server/tls/` (generated once, or
//! pre-placed custom CAs), the serving certificate and client certificates.
//!
//! Keys are ECDSA P-256 and written as `EC PRIVATE KEY` (SEC1), like k3s does.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::fsutil;

/// The CAs k3s keeps, by file stem relative to the tls dir, with their CN prefix.
pub const CAS: &[(&str, &str)] = &[
    ("server-ca", "k3s-server-ca"),
    ("client-ca", "k3s-client-ca"),
    ("request-header-ca", "k3s-request-header-ca"),
    ("etcd/server-ca", "etcd-server-ca"),
    ("etcd/peer-ca", "etcd-peer-ca"),
];

#[derive(Debug)]
pub struct PkiError(pub String);

impl std::fmt::Display for PkiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PkiError {}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        PkiError(format!("certificate error: {e}"))
    }
}

impl From<io::Error> for PkiError {
    fn from(e: io::Error) -> Self {
        PkiError(format!("i/o error: {e}"))
    }
}

// --- minimal DER for SEC1 <-> PKCS#8 -------------------------------------------------

const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        vec![len as u8]
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend(bytes);
        out
    }
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

/// Splits one TLV off the front: (tag, content, rest).
fn der_read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let content = input.get(header..header + len)?;
    Some((tag, content, &input[header + len..]))
}

/// PKCS#8 (as ring writes it) → SEC1 `ECPrivateKey` with the curve parameters.
pub fn pkcs8_to_sec1(pkcs8: &[u8]) -> Option<Vec<u8>> {
    let (_, info, _) = der_read(pkcs8)?;
    let (_, _version, rest) = der_read(info)?;
    let (_, _alg, rest) = der_read(rest)?;
    let (tag, inner, _) = der_read(rest)?;
    if tag != 0x04 {
        return None;
    }
    let (_, ec, _) = der_read(inner)?;
    let (vt, version, rest) = der_read(ec)?;
    let (kt, key, mut rest) = der_read(rest)?;
    let mut body = der_tlv(vt, version);
    body.extend(der_tlv(kt, key));
    body.extend(der_tlv(0xa0, OID_P256));
    while let Some((t, c, r)) = der_read(rest) {
        if t == 0xa1 {
            body.extend(der_tlv(t, c));
        }
        rest = r;
    }
    Some(der_tlv(0x30, &body))
}

/// SEC1 `ECPrivateKey` (P-256) → PKCS#8, dropping the optional parameters.
pub fn sec1_to_pkcs8(sec1: &[u8]) -> Option<Vec<u8>> {
    let (_, ec, _) = der_read(sec1)?;
    let (vt, version, rest) = der_read(ec)?;
    let (kt, key, mut rest) = der_read(rest)?;
    let mut inner = der_tlv(vt, version);
    inner.extend(der_tlv(kt, key));
    while let Some((t, c, r)) = der_read(rest) {
        if t == 0xa1 {
            inner.extend(der_tlv(t, c));
        }
        rest = r;
    }
    let inner = der_tlv(0x30, &inner);
    let mut alg = OID_EC_PUBLIC_KEY.to_vec();
    alg.extend_from_slice(OID_P256);
    let mut body = der_tlv(0x02, &[0]);
    body.extend(der_tlv(0x30, &alg));
    body.extend(der_tlv(0x04, &inner));
    Some(der_tlv(0x30, &body))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A key as `EC PRIVATE KEY` PEM.
pub fn key_to_pem(key: &KeyPair) -> Result<String, PkiError> {
    let sec1 = pkcs8_to_sec1(key.serialized_der())
        .ok_or_else(|| PkiError("cannot convert the generated key to SEC1".into()))?;
    Ok(pem("EC PRIVATE KEY", &sec1))
}

/// Reads a P-256 key from `EC PRIVATE KEY` or `PRIVATE KEY` PEM.
pub fn key_from_pem(text: &str) -> Result<KeyPair, PkiError> {
    use rustls::pki_types::PrivateKeyDer;
    let der = PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| PkiError(format!("cannot read private key PEM: {e}")))?;
    let pkcs8 = match &der {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Sec1(k) => sec1_to_pkcs8(k.secret_sec1_der())
            .ok_or_else(|| PkiError("malformed EC PRIVATE KEY".into()))?,
        _ => {
            return Err(PkiError(
                "only ECDSA P-256 keys are supported by the stand-in".into(),
            ))
        }
    };
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_slice().into(), &PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PkiError(format!("cannot load private key: {e}")))
}

// --- CAs -----------------------------------------------------------------------------

/// A loaded CA: the certificate file as stored (maybe a bundle) and its signer.
pub struct Ca {
    pub bundle_pem: Vec<u8>,
    pub cert_der: CertificateDer<'static>,
    pub issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Every certificate in the stored bundle.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        certs_from_pem(&self.bundle_pem)
    }
}

pub fn certs_from_pem(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc() - Duration::minutes(5)
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.not_before = now();
    params.not_after = now() + Duration::days(3650);
    params
}

fn paths(tls_dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        tls_dir.join(format!("{stem}.crt")),
        tls_dir.join(format!("{stem}.key")),
    )
}

/// Loads `<stem>.crt/.key` from `tls_dir`, or creates a new self-signed CA.
/// Returns the CA and whether it was generated now.
pub fn ensure_ca(tls_dir: &Path, stem: &str, cn_prefix: &str) -> Result<(Ca, bool), PkiError> {
    let (crt, key) = paths(tls_dir, stem);
    if crt.exists() && key.exists() {
        return Ok((load_ca(&crt, &key)?, false));
    }
    let signing_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let params = ca_params(&format!("{cn_prefix}@{}", crate::logfmt::now_unix()));
    let cert = params.self_signed(&signing_key)?;
    fsutil::write_atomic(&key, key_to_pem(&signing_key)?.as_bytes(), 0o600)?;
    fsutil::write_atomic(&crt, cert.pem().as_bytes(), 0o644)?;
    Ok((load_ca(&crt, &key)?, true))
}

pub fn load_ca(crt: &Path, key: &Path) -> Result<Ca, PkiError> {
    let bundle_pem = fs::read(crt)?;
    let key_pem = fs::read_to_string(key)?;
    let cert_der = certs_from_pem(&bundle_pem)
        .into_iter()
        .next()
        .ok_or_else(|| PkiError(format!("no certificate in `{}`", crt.display())))?;
    let signing_key =
        key_from_pem(&key_pem).map_err(|e| PkiError(format!("`{}`: {}", key.display(), e.0)))?;
    let issuer = Issuer::from_ca_cert_der(&cert_der, signing_key)?;
    Ok(Ca {
        bundle_pem,
        cert_der,
        issuer,
    })
}

/// The service-account key: created once if missing (any pre-placed key is kept).
pub fn ensure_service_key(tls_dir: &Path) -> Result<(), PkiError> {
    let path = tls_dir.join("service.key");
    if !path.exists() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        fsutil::write_atomic(&path, key_to_pem(&key)?.as_bytes(), 0o600)?;
    }
    Ok(())
}

/// A leaf certificate and its key, as PEM. `cert_pem` holds leaf + CA.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_pkcs8: Vec<u8>,
}

/// Issues a client certificate (`CN=<cn>, O=<org>`) signed by `ca`.
pub fn issue_client(ca: &Ca, cn: &str, org: Option<&str>) -> Result<Leaf, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    issue(ca, params)
}

/// Issues the serving certificate with the given DNS names and IPs.
pub fn issue_serving(ca: &Ca, dns: &[String], ips: &[IpAddr]) -> Result<Leaf, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "k3s");
    dn.push(DnType::CommonName, "k3s");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let mut sans = Vec::new();
    for name in dns {
        let dns_name = name
            .clone()
            .try_into()
            .map_err(|e| PkiError(format!("invalid SAN `{name}`: {e}")))?;
        sans.push(SanType::DnsName(dns_name));
    }
    sans.extend(ips.iter().copied().map(SanType::IpAddress));
    params.subject_alt_names = sans;
    issue(ca, params)
}

fn issue(ca: &Ca, mut params: CertificateParams) -> Result<Leaf, PkiError> {
    params.not_before = now();
    params.not_after = now() + Duration::days(365);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    let mut cert_pem = cert.pem();
    cert_pem.push_str(&pem("CERTIFICATE", &ca.cert_der));
    Ok(Leaf {
        cert_pem,
        key_pem: key_to_pem(&key)?,
        cert_der: cert.der().clone(),
        key_pkcs8: key.serialized_der().to_vec(),
    })
}

/// Loads a leaf pair from PEM files (as written by [`issue_client`]).
pub fn load_leaf(crt: &Path, key: &Path) -> Result<Leaf, PkiError> {
    let cert_pem = fs::read_to_string(crt)?;
    let key_pem = fs::read_to_string(key)?;
    let cert_der = certs_from_pem(cert_pem.as_bytes())
        .into_iter()
        .next()
        .ok_or_else(|| PkiError(format!("no certificate in `{}`", crt.display())))?;
    let key_pkcs8 = key_from_pem(&key_pem)?.serialized_der().to_vec();
    Ok(Leaf {
        cert_pem,
        key_pem,
        cert_der,
        key_pkcs8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sec1_roundtrip_loads_in_ring() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let pem_text = key_to_pem(&key).unwrap();
        assert!(pem_text.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
        let back = key_from_pem(&pem_text).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
    }

    #[test]
    fn ca_is_reused_and_signs_clients() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, created) = ensure_ca(dir.path(), "client-ca", "k3s-client-ca").unwrap();
        assert!(created);
        let (again, created) = ensure_ca(dir.path(), "client-ca", "k3s-client-ca").unwrap();
        assert!(!created);
        assert_eq!(ca.bundle_pem, again.bundle_pem);
        let leaf = issue_client(&again, "system:admin", Some("system:masters")).unwrap();
        assert_eq!(certs_from_pem(leaf.cert_pem.as_bytes()).len(), 2);
    }
}
