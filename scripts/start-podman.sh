#!/usr/bin/env bash
# Starts Podman's Docker-compatible API service for development and tests when none answers.
#
#   scripts/start-podman.sh [unix:///path/to/podman.sock]    (default: unix:///run/podman/podman.sock)
#   scripts/start-podman.sh --rootless USER                  (rootless, as USER; run as root)
#
# --rootless creates USER when missing (useradd gives it /etc/subuid and /etc/subgid ranges;
# newuidmap/newgidmap come from Debian's `uidmap`), makes its runtime directory
# /run/user/<uid>, and starts the service as USER on unix:///run/user/<uid>/podman/podman.sock
# (printed on stdout). Its PID file is timonel-podman-rootless.pid.
#
# Idempotent: if the socket already answers `/_ping`, it does nothing and exits 0. Otherwise it
# starts `podman system service --time=0 <socket>` in the background (no systemd needed), logs to
# a file, waits for `/_ping` with a deadline, and writes the service's PID to a file so the
# caller can stop what this script started:
#
#   scripts/start-podman.sh && trap 'kill "$(cat "$TIMONEL_PODMAN_PIDFILE")"' EXIT
#
# Without CAP_SYS_RESOURCE (inside a container, as here) the OCI runtime cannot raise a
# container's limits above its own, and Podman, unlike Docker, always asks for nofile=1048576
# and nproc=4194304: every container then fails with "error setting rlimit type 7". The script
# then gives the service a containers.conf whose `default_ulimits` are what it may set (the
# hard limits here, nproc no higher than kernel.pid_max).
#
# Environment:
#   TIMONEL_PODMAN_LOG       log file  (default: ${TMPDIR:-/tmp}/timonel-podman.log)
#   TIMONEL_PODMAN_PIDFILE   PID file  (default: ${TMPDIR:-/tmp}/timonel-podman.pid)
#   TIMONEL_PODMAN_TIMEOUT   seconds to wait for /_ping (default: 30)
set -euo pipefail
# shellcheck source=lib/wait-daemon.sh
. "$(dirname "$0")/lib/wait-daemon.sh"

tmp="${TMPDIR:-/tmp}"
user=""
if [[ "${1:-}" == --rootless ]]; then
    user="${2:?--rootless needs a user name}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "start-podman: --rootless sets up the user: run it as root" >&2
        exit 1
    fi
    id "$user" >/dev/null 2>&1 || useradd -m -s /bin/sh "$user"
    if ! grep -q "^$user:" /etc/subuid || ! grep -q "^$user:" /etc/subgid; then
        echo "start-podman: $user has no range in /etc/subuid or /etc/subgid (usermod --add-subuids/--add-subgids)" >&2
        exit 1
    fi
    uid=$(id -u "$user")
    install -d -o "$user" -m 700 "/run/user/$uid" "/run/user/$uid/podman"
    set -- "unix:///run/user/$uid/podman/podman.sock"
    TIMONEL_PODMAN_PIDFILE="${TIMONEL_PODMAN_PIDFILE:-$tmp/timonel-podman-rootless.pid}"
    TIMONEL_PODMAN_LOG="${TIMONEL_PODMAN_LOG:-$tmp/timonel-podman-rootless.log}"
fi
address="${1:-unix:///run/podman/podman.sock}"
pidfile="${TIMONEL_PODMAN_PIDFILE:-$tmp/timonel-podman.pid}"
log="${TIMONEL_PODMAN_LOG:-$tmp/timonel-podman.log}"
timeout="${TIMONEL_PODMAN_TIMEOUT:-30}"

say() { echo "start-podman: $*" >&2; }

if [[ "$address" != unix://* ]]; then
    say "only unix:// sockets are supported, not $address"
    exit 1
fi
socket="${address#unix://}"
ping() { curl -fsS --max-time 2 --unix-socket "$socket" http://podman/_ping >/dev/null 2>&1; }

if ping; then
    say "Podman's service already answers on $socket; nothing to start"
    if [[ -f "$pidfile" ]] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        rm -f "$pidfile"
    fi
    [[ -n "$user" ]] && echo "$address"
    exit 0
fi
if ! command -v podman >/dev/null 2>&1; then
    say "podman is not installed (Debian: apt-get install podman)"
    exit 1
fi

if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    pid="$(cat "$pidfile")"
    say "podman system service (pid $pid) was started earlier; waiting for it"
else
    mkdir -p "$(dirname "$socket")" "$(dirname "$log")" "$(dirname "$pidfile")"
    # A socket file left by a service that died blocks nothing but answers nothing: replace it.
    rm -f "$socket"
    cap_eff=$(awk '/^CapEff/{print $2}' /proc/self/status)
    if [[ -z "$user" ]] && ! (( (16#$cap_eff >> 24) & 1 )); then
        nofile=$(ulimit -Hn)
        nproc=$(ulimit -Hu)
        pid_max=$(cat /proc/sys/kernel/pid_max)
        if [[ "$nproc" == unlimited ]] || (( nproc > pid_max )); then nproc=$pid_max; fi
        conf="$tmp/timonel-podman-containers.conf"
        printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n' \
            "$nofile" "$nofile" "$nproc" "$nproc" >"$conf"
        export CONTAINERS_CONF="$conf"
        say "no CAP_SYS_RESOURCE: containers get nofile=$nofile, nproc=$nproc ($conf)"
    fi
    say "starting podman system service on $address (log: $log)"
    if [[ -n "$user" ]]; then
        # Rootless: the user's own storage and runtime directory; /tmp as its working directory.
        (cd /tmp && exec setsid runuser -u "$user" -- env XDG_RUNTIME_DIR="/run/user/$uid" \
            podman system service --time=0 "$address") >>"$log" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$pidfile"
    else
        setsid podman system service --time=0 "$address" >>"$log" 2>&1 </dev/null &
        pid=$!
    fi
    echo "$pid" >"$pidfile"
fi

wait_daemon "podman system service" "$pid" "$log" "$pidfile" "$timeout" ping
say "Podman's service is up (pid $pid, pid file $pidfile)"
[[ -n "$user" ]] && echo "$address"
exit 0
