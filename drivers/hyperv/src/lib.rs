//! timonel-driver-hyperv (work in progress)
