//! Join tokens: `K10<sha256 of the CA bundle>::<user>:<password>` or a bare password.

/// A parsed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The CA hash, when the token is a full ("secure") token.
    pub ca_hash: Option<String>,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(pub String);

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenError {}

/// Formats the full token stored in `server/token`.
pub fn format_full(ca_hash: &str, user: &str, password: &str) -> String {
    format!("K10{ca_hash}::{user}:{password}")
}

/// Parses a token the way k3s does: without `K10` it is a bare password.
pub fn parse(raw: &str, default_user: &str) -> Result<Token, TokenError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(TokenError("token is empty".into()));
    }
    let Some(rest) = raw.strip_prefix("K10") else {
        return Ok(Token {
            ca_hash: None,
            username: default_user.into(),
            password: raw.into(),
        });
    };
    let (hash, creds) = rest
        .split_once("::")
        .ok_or_else(|| TokenError("invalid token format: missing `::`".into()))?;
    if !(hash.is_empty() || (hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()))) {
        return Err(TokenError("invalid token CA hash length".into()));
    }
    let (user, password) = creds.split_once(':').ok_or_else(|| {
        TokenError("invalid token format: credentials are not user:password".into())
    })?;
    if password.is_empty() {
        return Err(TokenError("invalid token format: empty password".into()));
    }
    Ok(Token {
        ca_hash: (!hash.is_empty()).then(|| hash.to_ascii_lowercase()),
        username: user.into(),
        password: password.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn full_token_roundtrip() {
        let t = format_full(HASH, "server", "s3cret");
        assert_eq!(t, format!("K10{HASH}::server:s3cret"));
        let p = parse(&format!("{t}\n"), "node").unwrap();
        assert_eq!(p.ca_hash.as_deref(), Some(HASH));
        assert_eq!(p.username, "server");
        assert_eq!(p.password, "s3cret");
    }

    #[test]
    fn bare_password_and_errors() {
        let p = parse("secret", "node").unwrap();
        assert_eq!(p.ca_hash, None);
        assert_eq!(p.username, "node");
        assert!(parse("K10abc::server:x", "node").is_err());
        assert!(parse(&format!("K10{HASH}::server:"), "node").is_err());
        assert!(parse(&format!("K10{HASH}server:x"), "node").is_err());
        assert!(parse("", "node").is_err());
    }
}
