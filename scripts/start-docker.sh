#!/usr/bin/env bash
# Starts a Docker daemon for development and tests when none is answering.
#
# Idempotent: if `docker info` already works, it does nothing and exits 0. Otherwise it starts
# `dockerd` in the background (no systemd needed), logs to a file, waits for the socket with a
# deadline, and writes the daemon's PID to a file so the caller can stop what this script started:
#
#   scripts/start-docker.sh && trap 'kill "$(cat "$TIMONEL_DOCKERD_PIDFILE")"' EXIT
#
# Environment:
#   TIMONEL_DOCKERD_LOG       log file      (default: /var/log/timonel-dockerd.log, or $TMPDIR when not writable)
#   TIMONEL_DOCKERD_PIDFILE   PID file      (default: ${TMPDIR:-/tmp}/timonel-dockerd.pid)
#   TIMONEL_DOCKERD_TIMEOUT   seconds to wait for the socket (default: 60)
# The PID file exists only while a daemon this script started is (or was) running; when the
# daemon was already up, no PID file is written and any stale one is removed.
set -euo pipefail
# shellcheck source=lib/wait-daemon.sh
. "$(dirname "$0")/lib/wait-daemon.sh"

tmp="${TMPDIR:-/tmp}"
pidfile="${TIMONEL_DOCKERD_PIDFILE:-$tmp/timonel-dockerd.pid}"
timeout="${TIMONEL_DOCKERD_TIMEOUT:-60}"
if [[ -n "${TIMONEL_DOCKERD_LOG:-}" ]]; then
    log="$TIMONEL_DOCKERD_LOG"
elif [[ -w /var/log ]]; then
    log=/var/log/timonel-dockerd.log
else
    log="$tmp/timonel-dockerd.log"
fi

say() { echo "start-docker: $*" >&2; }
docker_answers() { docker info >/dev/null 2>&1; }

if docker info >/dev/null 2>&1; then
    say "a Docker daemon is already answering; nothing to start"
    # Not ours: make sure a caller does not stop someone else's daemon through a stale file.
    if [[ -f "$pidfile" ]] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        rm -f "$pidfile"
    fi
    exit 0
fi

if [[ -n "${DOCKER_HOST:-}" && "${DOCKER_HOST}" != unix://* ]]; then
    say "DOCKER_HOST=$DOCKER_HOST does not answer and is not a local socket; refusing to start a local daemon"
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
    say "dockerd is not installed (Debian: apt-get install docker.io)"
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    say "dockerd must be started as root; run this script with sudo"
    exit 1
fi

# A daemon we started earlier that is still starting up: wait for it rather than start a second.
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    pid="$(cat "$pidfile")"
    say "dockerd (pid $pid) was started earlier; waiting for it"
else
    # A stale pid file left by a daemon killed without cleanup blocks a new one.
    if [[ -f /var/run/docker.pid ]] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        rm -f /var/run/docker.pid
    fi
    mkdir -p "$(dirname "$log")" "$(dirname "$pidfile")"
    say "starting dockerd (log: $log)"
    # setsid: the daemon must not die with the caller's terminal or process group.
    setsid dockerd >>"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pidfile"
fi

wait_daemon "dockerd" "$pid" "$log" "$pidfile" "$timeout" docker_answers
say "dockerd is up (pid $pid, pid file $pidfile, $(docker version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}' 2>/dev/null))"
