//! timonel-driver-kvm (work in progress)
