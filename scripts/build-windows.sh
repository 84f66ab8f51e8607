#!/usr/bin/env bash
# Builds timonel.exe for 64-bit Windows (x86_64-pc-windows-gnu) on a Debian/Ubuntu machine, and
# beside it a small bcryptprimitives.dll that only Wine needs (scripts/windows/bcryptprimitives.c).
#
#   scripts/build-windows.sh            release build
#   scripts/build-windows.sh --dev      dev profile (faster to build; or TIMONEL_WINDOWS_PROFILE=dev)
#   scripts/build-windows.sh --dev --unit-tests
#                                       also builds timonel's unit tests for Windows and runs them
#                                       under Wine (cargo's runner; Wine must be installed)
#   scripts/build-windows.sh --dev --forwarder
#                                       also builds win-forwarder.exe (tests/win-forwarder, the
#                                       Windows lane's stand-in for powershell.exe/VBoxManage.exe)
#   scripts/build-windows.sh --dev --forwarder --driver-tests
#                                       also builds the Hyper-V and VirtualBox drivers' lifecycle
#                                       tests and the argv quoting test for Windows and runs them
#                                       under Wine through forwarders; needs a running
#                                       tests/windows/relay.py (TIMONEL_RELAY_PORT/_SECRET)
#
# On Windows itself no script is needed: `cargo build --release` builds timonel.exe.
#
# The toolchain: rustup's, when its x86_64-pc-windows-gnu target is installed
# (`rustup target add x86_64-pc-windows-gnu`); otherwise Debian's rustc-web/cargo-web with the
# standard library built from source (rust-web-src, `-Zbuild-std`). Either way MinGW-w64 links.
# Missing packages are installed when running as root or under CI=true. The linker is passed with
# `--config` for this target only: normal builds of the repository are not affected.
#
# The build goes to $CARGO_TARGET_DIR/windows (default target/windows), so the host's builds and
# this one never invalidate each other. The last lines of output are the paths of the .exe, of the
# DLL and (with --forwarder) of win-forwarder.exe.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

target=x86_64-pc-windows-gnu
profile=${TIMONEL_WINDOWS_PROFILE:-release}
unit_tests=false
forwarder=false
driver_tests=false
for arg in "$@"; do
  case "$arg" in
    --dev) profile=dev ;;
    --release) profile=release ;;
    --unit-tests) unit_tests=true ;;
    --forwarder) forwarder=true ;;
    --driver-tests) driver_tests=true ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-windows: unknown argument \`$arg\` (expected --dev, --release, --unit-tests, --forwarder or --driver-tests)" >&2; exit 2 ;;
  esac
done
if [ "$driver_tests" = true ] && [ "$forwarder" != true ]; then
  echo "build-windows: --driver-tests needs --forwarder" >&2; exit 2
fi
case "$profile" in
  release|dev) ;;
  *) echo "build-windows: TIMONEL_WINDOWS_PROFILE=$profile is not dev or release" >&2; exit 2 ;;
esac

log() { printf '==> %s\n' "$*" >&2; }

rustup_has_target() {
  command -v rustup >/dev/null 2>&1 &&
    rustup target list --installed 2>/dev/null | grep -qx "$target"
}

packages=(gcc-mingw-w64-x86-64)
rustup_has_target || packages+=(rustc-web cargo-web rust-web-src)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] || [ "${CI:-}" = true ]; then
    log "installing ${missing[*]}"
    sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "build-windows: missing packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
  fi
fi

linker=x86_64-w64-mingw32-gcc
out_dir=${CARGO_TARGET_DIR:-$root/target}/windows
bin_dir=$out_dir/$target/$([ "$profile" = dev ] && echo debug || echo release)

# cargo_windows SUBCOMMAND PACKAGE ARGS...: cargo for the Windows target with the toolchain found
# above.
cargo_windows() {
  local sub=$1 package=$2; shift 2
  local args=("$sub" --locked --profile "$profile" --target "$target" -p "$package"
              --config "target.$target.linker=\"$linker\"" "$@")
  if rustup_has_target; then
    (cd "$root" && CARGO_TARGET_DIR="$out_dir" cargo "${args[@]}")
  else
    # Debian's toolchain, not rustup's: it has the standard library's source to build for the
    # target. RUSTC_BOOTSTRAP lets this stable compiler take -Zbuild-std.
    (cd "$root" && env -u RUSTUP_TOOLCHAIN RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc \
      CARGO_TARGET_DIR="$out_dir" /usr/bin/cargo -Zbuild-std=std,panic_abort "${args[@]}")
  fi
}

if rustup_has_target; then
  log "building timonel.exe ($profile) with rustup's $target target"
else
  log "building timonel.exe ($profile) with $(/usr/bin/rustc --version) and std from source"
fi
cargo_windows build timonel --bin timonel
exe=$bin_dir/timonel.exe

dll=$bin_dir/bcryptprimitives.dll
src=$here/windows/bcryptprimitives.c
if [ ! -f "$dll" ] || [ "$src" -nt "$dll" ]; then
  log "building bcryptprimitives.dll (for Wine only)"
  "$linker" -shared -O2 -o "$dll.tmp" "$src" -ladvapi32
  mv "$dll.tmp" "$dll"
fi

wine=/usr/lib/wine/wine64
[ -x "$wine" ] || wine=$(command -v wine64 || command -v wine || echo wine)
if [ "$unit_tests" = true ] || [ "$driver_tests" = true ]; then
  # Test executables live in deps/: the DLL goes there too, where Wine looks first.
  mkdir -p "$bin_dir/deps"
  cp "$dll" "$bin_dir/deps/"
fi
if [ "$unit_tests" = true ]; then
  log "timonel's unit tests for Windows, under Wine"
  WINEDEBUG=${WINEDEBUG:--all} cargo_windows test timonel --lib \
    --config "target.$target.runner=\"$wine\"" >&2
fi

echo "$exe"
echo "$dll"
if [ "$forwarder" = true ]; then
  log "building win-forwarder.exe ($profile)"
  cargo_windows build timonel-win-forwarder --bin win-forwarder
  forwarder_exe=$bin_dir/win-forwarder.exe
  if [ "$driver_tests" = true ]; then
    : "${TIMONEL_RELAY_PORT:?start tests/windows/relay.py and set TIMONEL_RELAY_PORT}"
    : "${TIMONEL_RELAY_SECRET:?set TIMONEL_RELAY_SECRET (the relay secret)}"
    # The forwarder as the tests' Windows side sees it: Wine's Z: drive is /.
    TIMONEL_WIN_FORWARDER=Z:$(printf '%s' "$forwarder_exe" | tr / '\\')
    export TIMONEL_WIN_FORWARDER
    # VirtualBox: the 7.x lifecycle and the checks of what reaches VBoxManage (each VBoxManage
    # call is a Wine process: all 18 tests take 2.5-5 min there; the 6.1 variants add no
    # Windows-specific path).
    for t in "timonel-driver-hyperv simulator" \
             "timonel-driver-virtualbox lifecycle -- contract_suite_on_7x create_builds_the_vm \
               state_spawns_one_process graceful_stop_uses_acpi delete_removes_the_vm" \
             "timonel-driver windows_argv --features testing"; do
      set -- $t
      log "$1's $2 tests for Windows, under Wine, through forwarders"
      WINEDEBUG=${WINEDEBUG:--all} cargo_windows test "$1" --test "$2" \
        --config "target.$target.runner=\"$wine\"" "${@:3}" >&2
    done
  fi
  echo "$forwarder_exe"
fi
