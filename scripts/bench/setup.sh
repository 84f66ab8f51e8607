# Shared by scripts/bench.sh and scripts/soak.sh (sourced, not run): the tools they need, a
# running dockerd, and the release timonel and the k3s stand-in they measure.
#
# Usage: bench_setup TOOL... — each TOOL is a command name or `time` (GNU /usr/bin/time); the
# missing ones are installed from Debian when root. Sets $standin (the stand-in's path) and
# $target (the cargo target folder). Expects $here (scripts/) and $root (the repository).

bench_say() { echo "$(basename "$0" .sh): $*" >&2; }

bench_setup() {
  local need=() tool
  for tool in "$@"; do
    case "$tool" in
      time) [ -x /usr/bin/time ] || need+=(time) ;;
      docker) command -v docker >/dev/null || need+=(docker.io) ;;
      *) command -v "$tool" >/dev/null || need+=("$tool") ;;
    esac
  done
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      bench_say "installing ${need[*]}"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
      bench_say "missing ${need[*]} (install them, or run as root)"; exit 1
    fi
  fi
  "$here/start-docker.sh"
  bench_say "building timonel (release) and the k3s stand-in"
  cargo build --release -p timonel --bin timonel >&2
  standin=$("$here/build-standin.sh")
  target="${CARGO_TARGET_DIR:-$root/target}"
  mkdir -p "$target/bench"
}
