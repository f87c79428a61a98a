# Sourced by the other scripts: makes sure the machine can build geostore, and where the build goes.
#
# RocksDB's Rust bindings are generated with bindgen, which needs libclang; install it once if missing.
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
  echo "installing libclang-dev (needed to build RocksDB's bindings)..." >&2
  sudo_if_needed=""
  [ "$(id -u)" -eq 0 ] || sudo_if_needed="sudo"
  $sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get install -y -qq libclang-dev >/dev/null
fi
# Keep the build outside the checkout, so fresh clones (and CI) reuse it: RocksDB takes ~15 minutes to
# compile on two cores.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/geostore-target}"
