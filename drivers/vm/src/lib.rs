//! timonel-driver-vm (work in progress)
