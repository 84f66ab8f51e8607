//! The backends file: one `IP:PORT` a line (blank lines and `#` comments ignored), read again
//! when its content changes. A file whose last line has no newline is being written: it is
//! left for the next look.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The backends in `text`. `None` when the text is not complete yet (no final newline).
pub fn parse(text: &str) -> Option<Result<Vec<SocketAddr>, String>> {
    if !text.is_empty() && !text.ends_with('\n') {
        return None;
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.parse::<SocketAddr>() {
            Ok(a) if !out.contains(&a) => out.push(a),
            Ok(_) => {}
            Err(e) => return Some(Err(format!("line {}: `{line}`: {e}", i + 1))),
        }
    }
    Some(Ok(out))
}

/// The file, and what it said last.
#[derive(Debug)]
pub struct Watched {
    pub path: PathBuf,
    last: Option<String>,
}

impl Watched {
    pub fn new(path: PathBuf) -> Self {
        Self { path, last: None }
    }

    /// The new backends when the file changed to a complete, valid list; `None` otherwise (a
    /// missing or unreadable file, or bad lines, are logged once and the old list is kept).
    pub fn poll(&mut self) -> Option<Vec<SocketAddr>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                let said = format!("error: {e}");
                if self.last.as_deref() != Some(said.as_str()) {
                    crate::log(&format!(
                        "cannot read {}: {e}; keeping the backends",
                        self.path.display()
                    ));
                    self.last = Some(said);
                }
                return None;
            }
        };
        if self.last.as_deref() == Some(text.as_str()) {
            return None;
        }
        match parse(&text)? {
            Ok(list) => {
                self.last = Some(text);
                Some(list)
            }
            Err(e) => {
                crate::log(&format!(
                    "{}: {e}; keeping the backends",
                    self.path.display()
                ));
                self.last = Some(text);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lines_comments_and_partial_files() {
        let list = parse("# servers\n10.0.0.2:6443\n\n10.0.0.3:6443\n10.0.0.2:6443\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            list,
            vec![
                "10.0.0.2:6443".parse::<SocketAddr>().unwrap(),
                "10.0.0.3:6443".parse().unwrap()
            ]
        );
        assert_eq!(parse("").unwrap().unwrap(), vec![]);
        assert!(parse("10.0.0.2:6443").is_none(), "no final newline");
        assert!(parse("nope\n").unwrap().is_err());
    }

    #[test]
    fn a_file_is_read_again_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backends");
        let mut w = Watched::new(path.clone());
        assert_eq!(w.poll(), None, "missing");
        std::fs::write(&path, "10.0.0.2:6443\n").unwrap();
        assert_eq!(w.poll().unwrap().len(), 1);
        assert_eq!(w.poll(), None, "unchanged");
        std::fs::write(&path, "10.0.0.2:6443\n10.0.0.3:6443").unwrap();
        assert_eq!(w.poll(), None, "half written");
        std::fs::write(&path, "10.0.0.2:6443\n10.0.0.3:6443\n").unwrap();
        assert_eq!(w.poll().unwrap().len(), 2);
        std::fs::write(&path, "bad\n").unwrap();
        assert_eq!(w.poll(), None, "bad lines keep the old list");
    }
}
