#!/usr/bin/env bash
# Cross-compile farsight for an ARM edge box from an x86-64 Debian 12 machine, without containers.
#
#   cross/build.sh aarch64            aarch64-unknown-linux-gnu     (Raspberry Pi 4/5, Jetson, RK3588)
#   cross/build.sh armv7              armv7-unknown-linux-gnueabihf (older Pi, many NVR boards)
#   cross/build.sh TARGET --no-gst    the same without the `gst` feature (no RTSP / video files)
#
# Installs what it needs, idempotently, and says what it installs: the rustup target, Debian's cross
# gcc + libc (`gcc-aarch64-linux-gnu libc6-dev-arm64-cross` / `gcc-arm-linux-gnueabihf
# libc6-dev-armhf-cross`), `libclang-dev` (the v4l crate's bindgen). For the `gst` feature it
# unpacks the target's GStreamer development packages (Debian bookworm, the same GStreamer 1.22
# as the host) into a private sysroot, ${CARGO_TARGET_DIR:-target}/cross-sysroot/<debian-arch>/,
# with a private apt state: the host's dpkg database and apt sources are not touched.
# (`dpkg --add-architecture arm64` + `apt-get install libgstreamer-plugins-base1.0-dev:arm64` is
# not used because on Debian 12 that package conflicts with its amd64 twin: apt would remove the
# host's GStreamer headers, which the native build needs. See cross/README.md.)
#
# The result is a stripped release binary:
#   ${CARGO_TARGET_DIR:-target}/<triple>/release/farsight
# Run it under qemu with cross/smoke.sh TARGET; package it with
#   cargo deb --target <triple> --no-build      (see packaging/README.md)
#
# Environment: CARGO_TARGET_DIR (default target/), FARSIGHT_DEBIAN_MIRROR (default
# http://deb.debian.org), FARSIGHT_DEBIAN_SUITE (default: this host's codename, bookworm).
# Extra arguments after the target (other than --no-gst) are passed to `cargo build`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { echo "cross/build.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

usage="usage: cross/build.sh aarch64|armv7 [--no-gst] [cargo build args...]"
[[ $# -ge 1 ]] || die "$usage"
case "$1" in
  aarch64 | arm64 | aarch64-unknown-linux-gnu)
    triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu debarch=arm64 libcdev=libc6-dev-arm64-cross ;;
  armv7 | armhf | armv7-unknown-linux-gnueabihf)
    triple=armv7-unknown-linux-gnueabihf gnu=arm-linux-gnueabihf debarch=armhf libcdev=libc6-dev-armhf-cross ;;
  -h | --help) echo "$usage"; exit 0 ;;
  *) die "unknown target '$1' ($usage)" ;;
esac
shift
gst=1
cargo_args=()
for a in "$@"; do
  if [[ "$a" == "--no-gst" ]]; then gst=0; else cargo_args+=("$a"); fi
done

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
TRIPLE_ENV="$(echo "$triple" | tr 'a-z-' 'A-Z_')"     # AARCH64_UNKNOWN_LINUX_GNU
triple_env="${triple//-/_}"                           # aarch64_unknown_linux_gnu

# --- host tools -----------------------------------------------------------------------------------
SUDO=""; [[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
apt_install() { # packages...: installs those not installed yet, saying which
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq || say "warning: apt-get update reported errors; trying the install anyway"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
apt_install "gcc-$gnu" "$libcdev" "binutils-$gnu" libclang-dev pkg-config
command -v rustup >/dev/null || die "rustup not found (install the Rust toolchain with rustup)"
if ! rustup target list --installed | grep -qx "$triple"; then
  say "installing the Rust standard library for $triple (rustup target add)"
  rustup target add "$triple" >&2
fi

# --- GStreamer for the target: a private sysroot ----------------------------------------------------
SYSROOT="$TARGET_DIR/cross-sysroot/$debarch"
SYSROOT_FORMAT=2   # bump when make_sysroot changes: an older sysroot is made again
make_sysroot() {
  local state="$TARGET_DIR/cross-sysroot/$debarch.apt"
  local mirror="${FARSIGHT_DEBIAN_MIRROR:-http://deb.debian.org}"
  local suite="${FARSIGHT_DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}"
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  local pkgs=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev)
  [[ -f "$keyring" ]] || apt_install debian-archive-keyring
  mkdir -p "$state/lists/partial" "$state/archives/partial" "$state/sources.d" "$state/prefs.d"
  : >"$state/status"
  cat >"$state/sources.list" <<EOF
deb [arch=$debarch signed-by=$keyring] $mirror/debian $suite main
deb [arch=$debarch signed-by=$keyring] $mirror/debian $suite-updates main
deb [arch=$debarch signed-by=$keyring] $mirror/debian-security $suite-security main
EOF
  local apt=(apt-get -q -o "Dir::State=$state" -o "Dir::State::Lists=$state/lists"
    -o "Dir::State::status=$state/status" -o "Dir::Cache=$state" -o "Dir::Cache::archives=$state/archives"
    -o "Dir::Etc::SourceList=$state/sources.list" -o "Dir::Etc::SourceParts=$state/sources.d"
    -o "Dir::Etc::PreferencesParts=$state/prefs.d" -o "APT::Architecture=$debarch"
    -o "APT::Architectures::=$debarch" -o "APT::Install-Recommends=false" -o "Debug::NoLocking=true"
    -o "APT::Sandbox::User=root")
  say "fetching $debarch GStreamer development packages ($suite) into $SYSROOT (private apt state; the host's packages are not touched)"
  # A mirror mid-sync can fail one index (seen here with bookworm-security armhf): apt then uses
  # the others, which still gives a consistent bookworm sysroot. A missing package stops below.
  "${apt[@]}" update >&2 || say "warning: apt-get update of the private $debarch state reported errors (continuing)"
  "${apt[@]}" install -y --download-only "${pkgs[@]}" >&2 || return 1
  rm -rf "$SYSROOT.tmp"
  mkdir -p "$SYSROOT.tmp"
  # The target's libc development files are left out: the cross toolchain has its own, and the
  # libc.so linker script of libc6-dev names /lib/<triple>/libc.so.6 by absolute path, which the
  # linker would then look for on the host. (libc6 itself is kept: qemu runs the binary with it.)
  local deb n=0
  for deb in "$state"/archives/*.deb; do
    case "$(dpkg-deb -f "$deb" Package)" in
      libc6-dev | libc-dev-bin | linux-libc-dev | libcrypt-dev | libnsl-dev | libtirpc-dev) continue ;;
    esac
    dpkg-deb -x "$deb" "$SYSROOT.tmp"
    n=$((n + 1))
  done
  # Absolute symlinks (/lib/... -> ...) would point into the host: make them relative to the sysroot.
  local link target
  while IFS= read -r link; do
    target="$(readlink "$link")"
    ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$SYSROOT.tmp$target")" "$link"
  done < <(find "$SYSROOT.tmp" -type l -lname '/*')
  rm -rf "$SYSROOT"
  mv "$SYSROOT.tmp" "$SYSROOT"
  echo "$SYSROOT_FORMAT ${pkgs[*]}" >"$SYSROOT/.farsight-sysroot"
  say "sysroot ready: $n packages unpacked into $SYSROOT"
}

features=()
if [[ $gst -eq 1 ]]; then
  if [[ "$(cut -d' ' -f1 "$SYSROOT/.farsight-sysroot" 2>/dev/null)" != "$SYSROOT_FORMAT" ]]; then
    make_sysroot || die "could not fetch the $debarch GStreamer packages; build without them: cross/build.sh ${triple%%-*} --no-gst"
  fi
  pc="$SYSROOT/usr/lib/$gnu/pkgconfig:$SYSROOT/usr/share/pkgconfig"
  export "PKG_CONFIG_ALLOW_CROSS_$triple_env=1"
  export "PKG_CONFIG_SYSROOT_DIR_$triple_env=$SYSROOT"
  export "PKG_CONFIG_LIBDIR_$triple_env=$pc"
  export "PKG_CONFIG_PATH_$triple_env="
  # libgstreamer's own dependencies (glib, libffi, pcre2, libunwind, ...) are found at link time here.
  rpath_link="-C link-arg=-Wl,-rpath-link,$SYSROOT/usr/lib/$gnu -C link-arg=-Wl,-rpath-link,$SYSROOT/lib/$gnu"
  export "CARGO_TARGET_${TRIPLE_ENV}_RUSTFLAGS=$rpath_link"
else
  features=(--no-default-features --features v4l2)
fi

# --- the build ---------------------------------------------------------------------------------------
export "CARGO_TARGET_${TRIPLE_ENV}_LINKER=$gnu-gcc"
export "CC_$triple_env=$gnu-gcc" "CXX_$triple_env=$gnu-g++" "AR_$triple_env=$gnu-ar"
# bindgen (v4l crate) runs the host's libclang for the target: give it the cross kernel headers.
export "BINDGEN_EXTRA_CLANG_ARGS_$triple_env=-isystem /usr/$gnu/include"
export CARGO_PROFILE_RELEASE_STRIP=symbols   # the box gets a stripped binary

say "cargo build --release --target $triple ${features[*]} ${cargo_args[*]} (CARGO_TARGET_DIR=$TARGET_DIR)"
start=$(date +%s)
cargo build --release --locked --target "$triple" "${features[@]}" "${cargo_args[@]}"
secs=$(( $(date +%s) - start ))
bin="$TARGET_DIR/$triple/release/farsight"
[[ -f "$bin" ]] || die "cargo did not produce $bin"
say "built $bin in ${secs} s: $(stat -c %s "$bin") bytes ($(du -h "$bin" | cut -f1)), $(file -b "$bin" | cut -d, -f1-2)"
if [[ $gst -eq 1 ]]; then
  say "it links GStreamer: on the box install libgstreamer1.0-0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good (the .deb depends on them)"
fi
