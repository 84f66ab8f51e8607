//! timonel-driver-virtualbox (work in progress)
