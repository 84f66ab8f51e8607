//! The relay protocol (the other side is `tests/windows/relay.py`). All integers big-endian.
//!
//! Request (forwarder → relay): `TFWD1\n`, then strings (u32 length + UTF-8 bytes): secret,
//! target, cwd; then u32 count + that many strings for the arguments; then u32 count + pairs of
//! strings (name, value) for the environment.
//! Then frames both ways: u8 kind + u32 length + bytes. Kinds: 0 stdin (forwarder → relay; empty
//! = end of input), 1 stdout, 2 stderr, 3 exit (one byte: the code), 4 refused (UTF-8 reason).

use std::io::Read;

pub const MAGIC: &[u8] = b"TFWD1\n";

pub struct Request {
    pub secret: String,
    pub target: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
}

fn put(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        put(&mut out, &self.secret);
        put(&mut out, &self.target);
        put(&mut out, &self.cwd);
        out.extend_from_slice(&(self.args.len() as u32).to_be_bytes());
        for arg in &self.args {
            put(&mut out, arg);
        }
        out.extend_from_slice(&(self.env.len() as u32).to_be_bytes());
        for (name, value) in &self.env {
            put(&mut out, name);
            put(&mut out, value);
        }
        out
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Stdin(Vec<u8>),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(u8),
    Refused(String),
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, data): (u8, &[u8]) = match self {
            Frame::Stdin(d) => (0, d),
            Frame::Stdout(d) => (1, d),
            Frame::Stderr(d) => (2, d),
            Frame::Exit(code) => (3, std::slice::from_ref(code)),
            Frame::Refused(why) => (4, why.as_bytes()),
        };
        let mut out = vec![kind];
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    pub fn read(r: &mut impl Read) -> std::io::Result<Frame> {
        let mut head = [0u8; 5];
        r.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut data = vec![0u8; len];
        r.read_exact(&mut data)?;
        Ok(match head[0] {
            0 => Frame::Stdin(data),
            1 => Frame::Stdout(data),
            2 => Frame::Stderr(data),
            3 if len == 1 => Frame::Exit(data[0]),
            4 => Frame::Refused(String::from_utf8_lossy(&data).into_owned()),
            kind => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unknown frame kind {kind} ({len} bytes)"),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for frame in [
            Frame::Stdout(b"\xef\xbb\xbf{\"a\":1}\r\n".to_vec()),
            Frame::Stderr(Vec::new()),
            Frame::Exit(1),
            Frame::Refused("wrong secret".into()),
        ] {
            let bytes = frame.encode();
            assert_eq!(Frame::read(&mut bytes.as_slice()).ok(), Some(frame));
        }
    }

    #[test]
    fn an_unknown_kind_is_an_error() {
        assert!(Frame::read(&mut [9u8, 0, 0, 0, 0].as_slice()).is_err());
    }
}
