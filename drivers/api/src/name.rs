//! Validated identifiers. A name is checked once, in `FromStr`, so that no unchecked string can
//! reach a path, a shell, a PowerShell script or a VBoxManage argument.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("`{name}` is empty")]
    Empty { name: String },
    #[error("`{name}` is {len} characters long; the limit is {max}")]
    TooLong {
        name: String,
        len: usize,
        max: usize,
    },
    #[error("`{name}` contains `{ch}`; only lowercase letters, digits and `-` are allowed")]
    BadChar { name: String, ch: char },
    #[error("`{name}` must start and end with a lowercase letter or a digit")]
    BadEdge { name: String },
}

impl NameError {
    pub fn hint(&self) -> &'static str {
        "use a DNS-1123 label: lowercase letters, digits and `-`, starting and ending with a letter or digit (e.g. `dev`, `ci-42`)"
    }
}

fn validate_label(s: &str, max: usize) -> Result<(), NameError> {
    let name = s.to_string();
    if s.is_empty() {
        return Err(NameError::Empty { name });
    }
    let len = s.chars().count();
    if len > max {
        return Err(NameError::TooLong { name, len, max });
    }
    if let Some(ch) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::BadChar { name, ch });
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(NameError::BadEdge { name });
    }
    Ok(())
}

macro_rules! label_newtype {
    ($(#[$doc:meta])* $ty:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            /// The longest name accepted.
            pub const MAX_LEN: usize = $max;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                validate_label(s, $max)?;
                Ok(Self(s.to_string()))
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

label_newtype!(
    /// A cluster (profile) name: a DNS-1123 label of at most 40 characters.
    ClusterName,
    40
);
label_newtype!(
    /// A machine (node) name: a DNS-1123 label of at most 63 characters.
    MachineName,
    63
);

impl ClusterName {
    /// The name of node `index` (1-based) of this cluster: `<cluster>` for the first node,
    /// `<cluster>-m02`, `<cluster>-m03`, … for the others (minikube's scheme).
    pub fn machine(&self, index: u32) -> MachineName {
        if index <= 1 {
            MachineName(self.0.clone())
        } else {
            MachineName(format!("{}-m{:02}", self.0, index))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["timonel", "a", "dev-1", "0abc", &"x".repeat(40)] {
            assert!(ok.parse::<ClusterName>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_what_could_escape() {
        let cases = [
            ("", "empty"),
            ("Dev", "`D`"),
            ("a_b", "`_`"),
            ("-a", "start and end"),
            ("a-", "start and end"),
            ("../etc", "`.`"),
            ("a;rm -rf", "`;`"),
            ("a'b", "`'`"),
            ("a\"b", "`\"`"),
            ("a b", "` `"),
            ("a$(x)", "`$`"),
            ("é", "`é`"),
        ];
        for (bad, needle) in cases {
            let err = bad.parse::<ClusterName>().unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
        let long = "x".repeat(41);
        assert!(matches!(
            long.parse::<ClusterName>(),
            Err(NameError::TooLong {
                len: 41,
                max: 40,
                ..
            })
        ));
        assert!("x".repeat(63).parse::<MachineName>().is_ok());
        assert!("x".repeat(64).parse::<MachineName>().is_err());
    }

    #[test]
    fn machine_names_follow_the_index() {
        let c: ClusterName = "dev".parse().unwrap();
        assert_eq!(c.machine(1).as_str(), "dev");
        assert_eq!(c.machine(2).as_str(), "dev-m02");
        assert_eq!(c.machine(12).as_str(), "dev-m12");
    }

    #[test]
    fn serde_validates() {
        let ok: ClusterName = serde_json_like("\"dev\"");
        assert_eq!(ok.as_str(), "dev");
    }

    fn serde_json_like(s: &str) -> ClusterName {
        // A tiny deserializer from a quoted string, to avoid a serde_json dev-dependency.
        let inner = s.trim_matches('"');
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            serde::de::IntoDeserializer::into_deserializer(inner);
        ClusterName::deserialize(de).unwrap()
    }
}
