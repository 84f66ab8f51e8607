//! `HyperVDriver::new()` and `TIMONEL_POWERSHELL`. The only test binary that touches the process
//! environment, in one test so nothing races.

use timonel_driver::{Availability, Driver, DriverError};
use timonel_driver_hyperv::{HyperVDriver, ENV_POWERSHELL};

#[tokio::test]
async fn new_without_windows_or_override_is_unusable() {
    std::env::remove_var(ENV_POWERSHELL);
    if !cfg!(windows) {
        let d = HyperVDriver::new();
        assert_eq!(
            d.probe().await,
            Availability::Unusable {
                reason: "Hyper-V needs Windows".into(),
                fix: "use `--driver docker` or `--driver kvm`".into(),
            }
        );
        let err = d.state(&"dev".parse().unwrap()).await.unwrap_err();
        assert!(matches!(err, DriverError::NotAvailable { .. }), "{err:?}");
    }

    // An override that does not exist: unusable, saying which program is missing.
    std::env::set_var(ENV_POWERSHELL, "timonel-no-such-powershell");
    match HyperVDriver::new().probe().await {
        Availability::Unusable { reason, .. } => {
            assert!(reason.contains("timonel-no-such-powershell"), "{reason}")
        }
        other => panic!("{other:?}"),
    }

    #[cfg(unix)]
    {
        // The simulator through the override.
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("powershell");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nTIMONEL_PS_SIM_STATE='{}' exec python3 '{}/../../tests/simulators/powershell/powershell-sim.py' \"$@\"\n",
                dir.path().join("state").display(),
                env!("CARGO_MANIFEST_DIR")
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::env::set_var(ENV_POWERSHELL, &wrapper);
        assert!(HyperVDriver::new().probe().await.is_ready());
    }
    std::env::remove_var(ENV_POWERSHELL);
}
