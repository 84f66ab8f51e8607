#!/usr/bin/env bash
# The Windows lane: builds timonel.exe (dev profile, scripts/build-windows.sh) and runs it under
# Wine with explicit checks of its output and exit codes, after timonel's unit tests and the
# Hyper-V and VirtualBox drivers' lifecycle tests built for Windows and run under Wine. Wine is a
# stand-in for Windows: this catches what breaks in the Windows build (paths, pipes, command-line
# quoting, defaults, messages), it does not prove that timonel works on Windows.
#
# Wine cannot start Linux programs, so `powershell.exe` and `VBoxManage.exe` are copies of
# win-forwarder.exe (tests/win-forwarder), which relay each run to tests/windows/relay.py, started
# here, which runs the simulators of tests/simulators on the Linux side.
#
# Run by scripts/test.sh unless TIMONEL_SKIP_WINDOWS=1. Installs wine64 when root or CI=true.
# Any failed check fails the lane (exit 1), after all checks ran.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

log() { printf '==> %s\n' "$*" >&2; }

if ! dpkg -s wine64 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] || [ "${CI:-}" = true ]; then
    log "installing wine64"
    sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends wine64 >/dev/null
  else
    echo "test-windows: wine64 is not installed (apt-get install wine64), or set TIMONEL_SKIP_WINDOWS=1" >&2
    exit 1
  fi
fi
wine=/usr/lib/wine/wine64
[ -x "$wine" ] || wine=$(command -v wine64 || command -v wine)

# A Wine prefix of the lane's own, kept between runs (creating one takes a while); timonel's
# state in it is removed first, so each run starts from a user who never ran timonel.
export WINEPREFIX=${CARGO_TARGET_DIR:-$root/target}/windows/wineprefix
export WINEDEBUG=-all
unset DOCKER_HOST KUBECONFIG TIMONEL_HOME TIMONEL_DRIVER
mkdir -p "$WINEPREFIX"
"$wine" cmd /c exit 0 >/dev/null 2>&1 || true
rm -rf "$WINEPREFIX"/drive_c/users/*/.timonel

work=$(mktemp -d)
relay_pid=
cleanup() {
  [ -z "$relay_pid" ] || kill "$relay_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The relay for the forwarders, on a loopback port of its choosing, with a secret of this run.
TIMONEL_RELAY_SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export TIMONEL_RELAY_SECRET
python3 "$root/tests/windows/relay.py" "$work/relay.port" &
relay_pid=$!
for _ in $(seq 100); do
  [ -s "$work/relay.port" ] || ! kill -0 "$relay_pid" 2>/dev/null && break
  sleep 0.1
done
[ -s "$work/relay.port" ] || { echo "test-windows: tests/windows/relay.py did not start" >&2; exit 1; }
TIMONEL_RELAY_PORT=$(cat "$work/relay.port")
export TIMONEL_RELAY_PORT

# The .exe; timonel's unit tests built for Windows and run under Wine (paths, KUBECONFIG lists
# with `;`, lock files, atomic writes, …); the forwarder, and through it the drivers' lifecycle
# tests and the argv quoting test: a failing test fails the lane here.
built=$("$here/build-windows.sh" --dev --unit-tests --forwarder --driver-tests)
exe=$(printf '%s\n' "$built" | tail -3 | head -1)
forwarder=$(printf '%s\n' "$built" | tail -1)
failures=0
fail() { printf 'FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }

# run NAME ARGS...: runs timonel.exe, keeping stdout, stderr and the exit code under $work/NAME.
run() {
  local name=$1; shift
  set +e
  "$wine" "$exe" "$@" >"$work/$name.out" 2>"$work/$name.err"
  echo $? >"$work/$name.rc"
  set -e
}
# expect NAME RC [--out|--err|--no-err REGEX]...: checks a run's exit code and output.
expect() {
  local name=$1 rc=$2 before=$failures; shift 2
  local got; got=$(cat "$work/$name.rc")
  [ "$got" = "$rc" ] || fail "$name: exit code $got, expected $rc; stderr: $(head -c 600 "$work/$name.err")"
  while [ $# -gt 0 ]; do
    case "$1" in
      --out) grep -Eq -- "$2" "$work/$name.out" || fail "$name: stdout lacks /$2/: $(head -c 600 "$work/$name.out")" ;;
      --err) grep -Eq -- "$2" "$work/$name.err" || fail "$name: stderr lacks /$2/: $(head -c 600 "$work/$name.err")" ;;
      --no-err) ! grep -Eq -- "$2" "$work/$name.err" || fail "$name: stderr has /$2/: $(head -c 600 "$work/$name.err")" ;;
    esac
    shift 2
  done
  [ "$failures" != "$before" ] || printf 'ok: %s\n' "$name" >&2
}

run version version
expect version 0 --out '^timonel [0-9]+\.[0-9]+\.[0-9]+ .*windows/x86_64'

run help --help
expect help 0 --out 'Usage: timonel(\.exe)? ' --out '^  start '

run completion completion powershell
expect completion 0 --out 'Register-ArgumentCompleter'

# A reader that leaves early: the script is ~90 KiB, more than a pipe holds, so the writes meet a
# closed pipe. That is the reader's choice, not an error: exit 0, nothing on stderr.
for reader in "head -c 10" "true"; do
  name="completion-piped-to-${reader%% *}"
  set +e
  "$wine" "$exe" completion powershell 2>"$work/$name.err" | $reader >/dev/null
  echo "${PIPESTATUS[0]}" >"$work/$name.rc"
  set -e
  : >"$work/$name.out"
  expect "$name" 0 --no-err 'panicked|error'
done

run profile-list profile list
expect profile-list 0 --err 'no profiles yet'

# The settings file under %USERPROFILE%\.timonel, and back.
run config-set config set driver docker
expect config-set 0 --err 'C:\\users\\[^\\]+\\\.timonel\\config\.json'
ls "$WINEPREFIX"/drive_c/users/*/.timonel/config.json >/dev/null 2>&1 ||
  fail "config set: no config.json under the Wine user's profile folder"
run config-get config get driver
expect config-get 0 --out '^docker$'
run config-bad config set driver nosuch
expect config-bad 1 --err 'nosuch' --no-err 'panicked'

# No daemon and no hypervisor under Wine: each driver says why, for Windows.
run doctor doctor
expect doctor 1 --out 'npipe:////\./pipe/docker_engine' --out 'Docker Desktop' \
  --out 'driver hyperv .*(PowerShell|powershell)' --out '^disk space .* free under `C:\\'
grep -E -A1 '^driver hyperv' "$work/doctor.out" | grep -Eq 'elevat|Administrators' &&
  fail "doctor: the Hyper-V check advises elevation when PowerShell did not answer"
run kvm start --driver kvm
expect kvm 1 --err 'only supported on Linux' --no-err 'panicked'

# Hyper-V and VirtualBox answering through the forwarders (`doctor`, the CLI's own probes), and
# Ctrl-C: tests/windows/cli-checks.sh.
. "$here/windows/cli-checks.sh"

if [ "$failures" -gt 0 ]; then
  echo "test-windows: $failures check(s) failed" >&2
  exit 1
fi
echo "test-windows: all checks passed (under Wine $("$wine" --version 2>/dev/null || echo '?'))" >&2
