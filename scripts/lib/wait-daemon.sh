# Sourced by scripts/start-*.sh: waits for a daemon those scripts started to answer.
#
#   wait_daemon NAME PID LOG PIDFILE TIMEOUT_SECONDS CHECK_COMMAND...
#
# Polls CHECK_COMMAND every 0.2 s until it succeeds. Fails (exit 1, with the log's last lines)
# when the daemon's process ends first (its PID file is then removed) or when the deadline passes.
wait_daemon() {
    local name=$1 pid=$2 log=$3 pidfile=$4 timeout=$5
    shift 5
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name (pid $pid) exited; last lines of $log:" >&2
            tail -n 20 "$log" >&2 || true
            rm -f "$pidfile"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "$name (pid $pid) did not answer within ${timeout}s; last lines of $log:" >&2
            tail -n 20 "$log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}
