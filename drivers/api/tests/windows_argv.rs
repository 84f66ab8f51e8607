//! Arguments and environment values as a Windows program receives them from `HostRunner`: Rust
//! builds the command line (quoting), the child's runtime splits it again. Run under Wine by
//! scripts/test-windows.sh, where the child is win-forwarder.exe relaying to the relay's `echo`
//! target, which answers with the arguments and `TIMONEL_*` variables it got. Wine's parsing of
//! the command line stands in for Windows'.
#![cfg(windows)]
#![allow(clippy::unwrap_used)]

use timonel_driver::{forwarder, Cmd, HostRunner, Runner};

/// What `powershell.exe` and `VBoxManage.exe` get from the drivers: spaces, quotes, trailing
/// backslashes (drive paths of folders), non-ASCII names, empty arguments, PowerShell syntax.
const HARD: &[&str] = &[
    "plain",
    "two words",
    "",
    "say \"hi\"",
    "\"",
    "C:\\Program Files\\Oracle\\VirtualBox\\",
    "D:\\Máquinas virtuales\\nodo ñ 1\\disk.vdi",
    "C:\\a\\\\\"b",
    "tab\there",
    "'single' and \"double\" and `backtick`",
    "$env:TIMONEL_VM_NAME; $(Get-Date) | ConvertTo-Json -Compress",
    "日本語 Ünïcödé ✓",
    "ends with backslashes\\\\",
];

#[tokio::test]
async fn hard_arguments_and_values_arrive_unchanged() {
    let dir = tempfile::Builder::new()
        .prefix("argv quoting 'ñ' ")
        .tempdir()
        .unwrap();
    let exe = forwarder::install(dir.path(), "echo tool", "echo", &[]).unwrap();
    let value = "Año \"x\" 'y' ; $(z) \\\\server\\share\\";
    let cmd = Cmd::new(exe.to_str().unwrap())
        .args(HARD.iter().copied())
        .env("TIMONEL_HARD_VALUE", value);
    let out = HostRunner.run(&cmd).await.unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(got["args"], serde_json::json!(HARD), "{}", out.stdout);
    assert_eq!(got["env"]["TIMONEL_HARD_VALUE"], value);
}
