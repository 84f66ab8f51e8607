//! Quoting for a POSIX shell. SSH carries one command line, which the remote user's shell parses,
//! so every word of a [`Cmd`] is quoted here.

use std::borrow::Cow;

use timonel_driver::{Cmd, CommandError};

/// Quotes `word` so a POSIX shell reads it back as exactly one word, unchanged.
///
/// Words made only of characters no shell treats specially are left alone; anything else is put
/// in single quotes, with each `'` written as `'\''`. `=` is quoted too, so that a program
/// name can never be read as an assignment.
pub fn quote(word: &str) -> Cow<'_, str> {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:,+@%".contains(&b));
    if plain {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

/// Whether `key` is a name `env` accepts as a variable (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// The shell command line for `cmd`: `[sudo -n] [env K=V…] program args…`, every word quoted.
/// The environment goes through `env` so it survives `sudo`.
pub fn command_line(cmd: &Cmd, sudo: bool) -> Result<String, CommandError> {
    let mut words: Vec<Cow<'_, str>> = Vec::new();
    if sudo {
        words.push("sudo".into());
        words.push("-n".into());
    }
    if !cmd.env.is_empty() {
        words.push("env".into());
        for (key, value) in &cmd.env {
            if !is_env_name(key) {
                return Err(CommandError::Unexpected {
                    message: format!("`{key}` is not a valid environment variable name"),
                });
            }
            words.push(Cow::Owned(quote(&format!("{key}={value}")).into_owned()));
        }
    }
    words.extend(cmd.argv().into_iter().map(quote));
    Ok(words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_plain() {
        for w in [
            "ls",
            "-la",
            "/etc/rancher/k3s",
            "a,b",
            "user@host",
            "v1.31.2+k3s1",
        ] {
            assert_eq!(quote(w), w);
        }
    }

    #[test]
    fn special_words_are_single_quoted() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$HOME"), "'$HOME'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("a=b"), "'a=b'");
        assert_eq!(quote("~"), "'~'");
        assert_eq!(quote("x;rm -rf /"), "'x;rm -rf /'");
        assert_eq!(quote("line\nbreak"), "'line\nbreak'");
    }

    #[test]
    fn command_line_has_sudo_env_and_quoted_args() {
        let cmd = Cmd::new("sh")
            .args(["-c", "echo $X"])
            .env("X", "a b")
            .env("K3S_TOKEN", "t'k");
        assert_eq!(
            command_line(&cmd, true).unwrap(),
            r"sudo -n env 'X=a b' 'K3S_TOKEN=t'\''k' sh -c 'echo $X'"
        );
        assert_eq!(
            command_line(&Cmd::new("uname").arg("-a"), false).unwrap(),
            "uname -a"
        );
        let bad = Cmd::new("true").env("A B", "x");
        assert!(command_line(&bad, false).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_real_shell_reads_the_words_back() {
        let words = [
            "plain",
            "",
            "two words",
            "it's",
            "\"dq\"",
            "$(id)",
            "`id`",
            "back\\slash",
            "new\nline",
            "*",
            "a=b",
            "ünïcode",
            "tab\there",
        ];
        let line = words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
        let script = format!("for w in {line}; do printf '%s\\0' \"$w\"; done");
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let got: Vec<String> = out
            .stdout
            .split(|b| *b == 0)
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect();
        // A trailing NUL leaves one empty chunk at the end.
        assert_eq!(&got[..got.len() - 1], &words.map(String::from)[..]);
    }
}
