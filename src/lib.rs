//! timonel: a local Kubernetes cluster bootstrapper.

pub mod artifact;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod distro;
pub mod drivers;
pub mod env;
pub mod error;
pub mod fsutil;
pub mod home;
pub mod http;
pub mod kubeconfig;
pub mod lock;
pub mod output;
pub mod profile;
pub mod units;
