//! The drivers this build knows, and how one is picked.

/// Names of the drivers compiled into this build, in probe order.
pub fn compiled_in() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "docker") {
        v.push("docker");
    }
    if cfg!(feature = "kvm") {
        v.push("kvm");
    }
    v.push("hyperv");
    v.push("virtualbox");
    v
}
