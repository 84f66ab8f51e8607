//! The line protocol between timonel and its `timonel-kvm` helper: JSON, one message a line.
//!
//! timonel writes [`Call`]s to the helper's stdin; the helper answers each with zero or more
//! progress [`Event`]s and one [`Event::Done`] on its stdout, all carrying the call's id, so
//! calls run concurrently (nodes are created in parallel). The first call is always
//! [`Request::Hello`]: a helper that speaks another [`PROTOCOL`] is refused with a clear error.
//! The helper's stderr is free text (diagnostics); stdout carries nothing but answers.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use timonel_driver::{Availability, ClusterName, MachineName, MachineSpec, MachineState, StopMode};

use crate::wire_error::WireError;

/// The version of this protocol. A change to any message here bumps it.
pub const PROTOCOL: u32 = 2;

/// One request, timonel to helper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub id: u64,
    pub request: Request,
}

/// The [`timonel_driver::Driver`] methods the kvm driver implements, plus the handshake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Request {
    Hello,
    Probe,
    Create { spec: Box<MachineSpec> },
    Start { name: MachineName },
    Stop { name: MachineName, how: StopMode },
    Pause { name: MachineName },
    Unpause { name: MachineName },
    Delete { name: MachineName },
    DeleteCluster { cluster: ClusterName },
    State { name: MachineName },
    Ip { name: MachineName },
    Endpoint { name: MachineName, port: u16 },
}

/// One line from the helper, about the call `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub id: u64,
    pub event: Event,
}

/// What the helper says about a call: progress (the driver's [`timonel_driver::Reporter`]
/// calls), then exactly one `Done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Step(String),
    Progress { done: u64, total: Option<u64> },
    Warn(String),
    Done(Result<Reply, WireError>),
}

/// The result of a call that succeeded, one variant per kind of result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Hello { protocol: u32, version: String },
    Availability(Availability),
    Done,
    Removed(Vec<String>),
    State(MachineState),
    Ip(IpAddr),
    Endpoint(SocketAddr),
}

impl Reply {
    /// The name of the variant, for the error when a reply does not fit its call.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Availability(_) => "availability",
            Self::Done => "done",
            Self::Removed(_) => "removed",
            Self::State(_) => "state",
            Self::Ip(_) => "ip",
            Self::Endpoint(_) => "endpoint",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;
    use timonel_driver::{NodeRole, VmDisk};

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        value: T,
    ) {
        let line = serde_json::to_string(&value).unwrap();
        assert!(!line.contains('\n'), "{line}");
        let back: T = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value, "{line}");
    }

    #[test]
    fn every_request_is_one_line_and_comes_back_equal() {
        let name: MachineName = "dev".parse().unwrap();
        let mut spec = MachineSpec::new(name.clone(), "dev".parse().unwrap(), NodeRole::Server, 1);
        spec.cpus = Some(1.5);
        spec.vm_disk = Some(VmDisk {
            base_image: "/cache/base.qcow2".into(),
            size_mib: 4096,
            seed_iso: "/home/u/seed.iso".into(),
            state_dir: "/home/u/node".into(),
        });
        spec.options.insert("kvm.accel".into(), "tcg\nkvm".into());
        // Host folders ride inside the spec (Windows-looking paths too: only the helper's host
        // judges them).
        spec.mounts = vec![timonel_driver::Mount {
            host: r"C:\Users\me\src".into(),
            node: "/src".into(),
            read_only: true,
        }];
        for request in [
            Request::Hello,
            Request::Probe,
            Request::Create {
                spec: Box::new(spec),
            },
            Request::Stop {
                name: name.clone(),
                how: StopMode::graceful(Duration::from_millis(1500)),
            },
            Request::Stop {
                name: name.clone(),
                how: StopMode::Force,
            },
            Request::Pause { name: name.clone() },
            Request::Unpause { name: name.clone() },
            Request::DeleteCluster {
                cluster: "dev".parse().unwrap(),
            },
            Request::Endpoint { name, port: 22 },
        ] {
            round_trip(Call { id: 7, request });
        }
    }

    #[test]
    fn every_reply_comes_back_equal() {
        for event in [
            Event::Step("defining the domain".into()),
            Event::Progress {
                done: 3,
                total: None,
            },
            Event::Done(Ok(Reply::Availability(Availability::Unusable {
                reason: "no".into(),
                fix: "yes".into(),
            }))),
            Event::Done(Ok(Reply::State(MachineState::Error { raw: "x".into() }))),
            Event::Done(Ok(Reply::Endpoint("192.168.1.2:22".parse().unwrap()))),
            Event::Done(Ok(Reply::Removed(vec!["domain timonel-a".into()]))),
        ] {
            round_trip(Answer { id: 1, event });
        }
    }

    #[test]
    fn pause_and_unpause_have_their_own_ops() {
        let pause = Call {
            id: 3,
            request: Request::Pause {
                name: "dev".parse().unwrap(),
            },
        };
        assert_eq!(
            serde_json::to_string(&pause).unwrap(),
            r#"{"id":3,"request":{"op":"pause","name":"dev"}}"#
        );
        let line = r#"{"id":4,"request":{"op":"unpause","name":"dev"}}"#;
        assert_eq!(
            serde_json::from_str::<Call>(line).unwrap().request,
            Request::Unpause {
                name: "dev".parse().unwrap()
            }
        );
    }

    #[test]
    fn an_invalid_name_is_refused_when_read() {
        let line = r#"{"id":1,"request":{"op":"state","name":"../etc"}}"#;
        assert!(serde_json::from_str::<Call>(line).is_err());
    }
}
