//! timonel: a local Kubernetes cluster bootstrapper.
