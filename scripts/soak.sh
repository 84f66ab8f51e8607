#!/usr/bin/env bash
# Soak: CYCLES (default 25) cycles of start / stop / start / delete of a 1-node and a 3-node
# cluster on the real dockerd with the k3s stand-in (a test double of k3s), from a loopback
# mirror, with accounting before and after: containers, volumes and networks of the soak's
# profiles, timonel's images, the daemon's open files, files under $TIMONEL_HOME and the
# kubeconfig's size. Writes target/bench/soak.json; exits 3 when something grew, 1 on an error.
# Not part of scripts/test.sh (25 cycles take about five minutes); README: "Test it".
#
# Environment: CYCLES (25), SOAK_FD_SLACK (daemon file descriptors allowed to differ, 8: other
# clients of the daemon on the same machine open and close connections).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

# shellcheck source=bench/setup.sh
. "$here/bench/setup.sh"
bench_setup python3 docker

exec python3 "$here/bench/soak.py" \
  --timonel "$target/release/timonel" \
  --standin "$standin" \
  --out "$target/bench/soak.json" \
  --cycles "${CYCLES:-25}" \
  --fd-slack "${SOAK_FD_SLACK:-8}"
