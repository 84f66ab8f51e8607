#!/usr/bin/env bash
# Benchmarks: the numbers timonel claims, measured in one run on this machine (README:
# "Benchmarks"). Real dockerd, the k3s stand-in (a test double of k3s), a counting HTTP mirror
# on 127.0.0.1. Each figure is a median of several runs; each comparison is a ratio measured side
# by side in the same run. Prints a table and writes target/bench/report.json. Exits 3 when a
# goal is missed (the report says which), 1 on an error.
#
# Environment: BENCH_RUNS (default 5), BENCH_DOWNLOAD_MB (300), BENCH_RSS_MB (350).
# Needs: docker.io, curl, hyperfine, python3, GNU time (/usr/bin/time); installs the missing
# Debian packages when root. Not part of scripts/test.sh (it takes a few minutes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

# shellcheck source=bench/setup.sh
. "$here/bench/setup.sh"
bench_setup hyperfine curl time python3 docker
bench_say "building the VM drivers' process counters"
counts=$(
  cargo run -q -p timonel-driver-hyperv --example hyperv_process_count
  cargo run -q -p timonel-driver-virtualbox --example virtualbox_process_count
)

exec python3 "$here/bench/bench.py" \
  --timonel "$target/release/timonel" \
  --standin "$standin" \
  --out "$target/bench/report.json" \
  --runs "${BENCH_RUNS:-5}" \
  --download-mb "${BENCH_DOWNLOAD_MB:-300}" \
  --rss-mb "${BENCH_RSS_MB:-350}" \
  --process-counts "$counts"
