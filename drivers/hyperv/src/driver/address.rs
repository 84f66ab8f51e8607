//! Reading a VM's address, and the error for a VM that got none in time.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use timonel_driver::{DriverError, MachineName, MachineState};

use super::{vm_what, HyperVDriver};
use crate::parse::{parse_json, parse_vm_state, pick_ipv4, Inspect, IpReport};
use crate::script;
use crate::switch::no_address_error;

impl HyperVDriver {
    pub(super) async fn ip_once(
        &self,
        name: &MachineName,
        seen: &Mutex<Option<IpReport>>,
    ) -> Result<Result<IpAddr, String>, DriverError> {
        let what = vm_what(name);
        let out = self
            .run(
                "read the VM's addresses",
                &what,
                script::ip(&self.vm_ref(name)),
            )
            .await?;
        let report: IpReport = parse_json("the VM's addresses", &out)?;
        self.remember(name, &report.vm_id);
        let state = parse_vm_state(&report.state);
        let result = match state {
            MachineState::Running => Ok(pick_ipv4(&report.ip_addresses).ok_or_else(|| {
                if report.ip_addresses.is_empty() {
                    "running, no address reported yet (is hv_kvp_daemon running in the guest?)"
                        .to_string()
                } else {
                    format!("running, only {}", report.ip_addresses.join(", "))
                }
            })),
            MachineState::Starting => Ok(Err("starting".to_string())),
            other => Err(DriverError::InvalidState {
                what,
                state: other.to_string(),
                action: "reading its IP address".to_string(),
            }),
        };
        *seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(report);
        result
    }

    /// The error for a VM that got no IPv4 address in time: it names the VM's switch (and its
    /// kind, from one more look at the switches) and how to pick another.
    pub(super) async fn no_address(
        &self,
        name: &MachineName,
        after: Duration,
        last: &str,
        report: Option<IpReport>,
    ) -> DriverError {
        let report = report.unwrap_or(IpReport {
            vm_id: String::new(),
            state: String::new(),
            ip_addresses: Vec::new(),
            switch_name: String::new(),
        });
        let switch = report
            .switch_name
            .split(',')
            .next()
            .unwrap_or("")
            .to_string();
        let found = if switch.is_empty() {
            None
        } else {
            match self
                .run("inspect Hyper-V", &vm_what(name), script::inspect(name))
                .await
            {
                Ok(out) => parse_json::<Inspect>("the virtual switches", &out)
                    .ok()
                    .and_then(|i| i.switches.into_iter().find(|s| s.name == switch)),
                Err(_) => None,
            }
        };
        no_address_error(
            name.as_str(),
            after,
            last,
            &switch,
            found.as_ref(),
            &report.ip_addresses,
        )
    }
}
