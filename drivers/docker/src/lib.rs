//! timonel-driver-docker (work in progress)
