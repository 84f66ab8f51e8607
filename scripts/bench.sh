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

say() { echo "bench: $*" >&2; }

need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v curl >/dev/null || need+=(curl)
[ -x /usr/bin/time ] || need+=(time)
command -v python3 >/dev/null || need+=(python3)
command -v docker >/dev/null || need+=(docker.io)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    say "missing ${need[*]} (install them, or run as root)"; exit 1
  fi
fi

"$here/start-docker.sh"

say "building timonel (release), the k3s stand-in, and the VM drivers' process counters"
cargo build --release -p timonel --bin timonel >&2
standin=$("$here/build-standin.sh")
target="${CARGO_TARGET_DIR:-$root/target}"
counts=$(
  cargo run -q -p timonel-driver-hyperv --example hyperv_process_count
  cargo run -q -p timonel-driver-virtualbox --example virtualbox_process_count
)

mkdir -p "$target/bench"
exec python3 "$here/bench/bench.py" \
  --timonel "$target/release/timonel" \
  --standin "$standin" \
  --out "$target/bench/report.json" \
  --runs "${BENCH_RUNS:-5}" \
  --download-mb "${BENCH_DOWNLOAD_MB:-300}" \
  --rss-mb "${BENCH_RSS_MB:-350}" \
  --process-counts "$counts"
