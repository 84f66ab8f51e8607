//! timonel's Hyper-V driver: Generation 2 VMs driven through PowerShell.
//!
//! Every Hyper-V action is one PowerShell process (`<ps> -NoProfile -NonInteractive -Command
//! <script>`) run through an injected [`Runner`](timonel_driver::Runner), so the crate compiles
//! and is tested on every OS; it is only usable on Windows (or against a simulator).
//!
//! - Scripts are constant text; values reach them as environment variables ([`script`]).
//! - Output is `ConvertTo-Json -Compress`, parsed with serde ([`parse`]).
//! - Failures are classified by the error record's category and id, never by its (localized)
//!   message ([`record`]).

pub mod disk;
mod driver;
mod files;
pub mod parse;
mod probe;
pub mod record;
pub mod script;
mod settings;
pub mod switch;

pub use driver::{
    HyperVDriver, Timing, DEFAULT_CPUS, DEFAULT_MEMORY_MIB, ENV_POWERSHELL, VMID_FILE,
};
pub use probe::{powershell_check_fix, probe_verdict};
pub use settings::{even_memory_mib, vm_notes, whole_cpus};
pub use switch::{
    choose_switch, default_switch_warning, no_address_error, SwitchChoice, DEFAULT_SWITCH_ID,
    SWITCH_OPTION,
};
