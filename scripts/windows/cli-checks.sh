# Sourced by scripts/test-windows.sh (uses its run, expect, fail, $wine, $exe, $work and
# $forwarder): timonel.exe under Wine with `powershell.exe` and `VBoxManage.exe` that are
# forwarders to the simulators (tests/windows/relay.py runs them on the Linux side).

# winpath PATH: the Windows path of a Linux path (Wine's Z: drive is /).
winpath() { printf 'Z:%s' "$(printf '%s' "$1" | tr / '\\')"; }

# tool NAME TARGET: a forwarder $work/tools/NAME.exe to the relay's TARGET; prints its Windows path.
tool() {
  mkdir -p "$work/tools"
  cp "$forwarder" "$work/tools/$1.exe"
  cp "$(dirname "$forwarder")/bcryptprimitives.dll" "$work/tools/"
  printf 'port=%s\nsecret=%s\ntarget=%s\n' "$TIMONEL_RELAY_PORT" "$TIMONEL_RELAY_SECRET" "$2" \
    >"$work/tools/$1.relay"
  winpath "$work/tools/$1.exe"
}

mkdir -p "$work/ps-state" "$work/vbox-state"
export TIMONEL_PS_SIM_STATE=$work/ps-state TIMONEL_VBOX_SIM_STATE=$work/vbox-state
TIMONEL_POWERSHELL=$(tool powershell powershell)
TIMONEL_VBOXMANAGE=$(tool VBoxManage vboxmanage)
export TIMONEL_POWERSHELL TIMONEL_VBOXMANAGE

# Both hypervisors answer: doctor's probes are one PowerShell process and VBoxManage --version.
run doctor-hypervisors doctor
expect doctor-hypervisors 0 --out '^driver hyperv +ok +Hyper-V [0-9.]+ on Windows' \
  --out '^driver virtualbox +ok +VirtualBox 7\.' --out '^usable driver +ok +hyperv, virtualbox'
probes=$(wc -l <"$work/ps-state/calls.log" 2>/dev/null || echo 0)
[ "$probes" = 1 ] || fail "doctor: $probes PowerShell processes for the Hyper-V probe, expected 1"

# Ctrl-C in the console: Wine turns SIGINT to a console program into CTRL_C_EVENT, which
# timonel's console control handler (tokio's, see src/cluster/cancel.rs) takes as an interrupt.
# `start` is held in its first request (the k3s channel) by a server that never answers: the
# first Ctrl-C stops it there (waiting on a server is a safe point), with 130 and nothing made.
# A second Ctrl-C is sent only if the first did not end it, and fails the check.
python3 - "$work/hang.port" <<'PY' &
import os, socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(300)
PY
hang_pid=$!
for _ in $(seq 100); do [ -s "$work/hang.port" ] && break; sleep 0.1; done
hang=http://127.0.0.1:$(cat "$work/hang.port")
# wait_for PATTERN: until stderr of the run has PATTERN or the run ended (30 s at most).
wait_for() {
  for _ in $(seq 300); do
    grep -q "$1" "$work/ctrl-c.err" && return 0
    kill -0 "$start_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
set +e
TIMONEL_BINARY_MIRROR=$hang TIMONEL_CHANNEL_URL=$hang/channels \
  "$wine" "$exe" start --driver hyperv -p wctrl --disk-size 2g \
  >"$work/ctrl-c.out" 2>"$work/ctrl-c.err" &
start_pid=$!
wait_for 'Using the hyperv driver'
kill -INT "$start_pid" 2>/dev/null
for _ in $(seq 300); do kill -0 "$start_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$start_pid" 2>/dev/null; then
  kill -INT "$start_pid" 2>/dev/null
  sleep 5
  kill -KILL "$start_pid" 2>/dev/null
  fail "ctrl-c: timonel.exe start still running 30 s after the Ctrl-C"
fi
wait "$start_pid"
echo $? >"$work/ctrl-c.rc"
set -e
kill "$hang_pid" 2>/dev/null || true
expect ctrl-c 130 --err '^interrupted: stopping at the next safe point' \
  --no-err 'interrupted again' --no-err 'panicked'
grep -q '"Name"' "$work/ps-state/vms.json" 2>/dev/null && fail "ctrl-c: a VM was created"
unset TIMONEL_POWERSHELL TIMONEL_VBOXMANAGE TIMONEL_PS_SIM_STATE TIMONEL_VBOX_SIM_STATE
