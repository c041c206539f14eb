#!/usr/bin/env bash
# Installs what fewstep needs on a fresh Debian/Ubuntu machine, idempotently: the HDF5 C library
# (the `hdf5` crate links against it) and pkg-config, plus a Rust toolchain when none is present.
set -euo pipefail

need_pkgs=()
dpkg -s libhdf5-dev >/dev/null 2>&1 || need_pkgs+=(libhdf5-dev)
command -v pkg-config >/dev/null 2>&1 || need_pkgs+=(pkg-config)
command -v cc >/dev/null 2>&1 || need_pkgs+=(build-essential)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    echo "setup: installing Rust with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >&2
  }
  export PATH="$HOME/.cargo/bin:$PATH"
fi
# The hdf5 crate finds Debian's libhdf5-dev (in hdf5/serial) through pkg-config.

# cargo-deny, for scripts/test.sh's dependency checks (deny.toml): installed on first use only,
# so scripts/main.sh does not pay for it. 0.20.2 needs Rust 1.88 to build (the toolchain, not
# fewstep's rust-version); compiling it takes about 4 minutes of CPU.
ensure_cargo_deny() {
  command -v cargo-deny >/dev/null 2>&1 && return 0
  echo "setup: installing cargo-deny 0.20.2 (cargo install, a few minutes)" >&2
  cargo install cargo-deny --version 0.20.2 --locked --quiet >&2
}

# The `mpi` feature (data-parallel training under mpirun, docs/distributed.md), only when asked
# for: FEWSTEP_FEATURES=mpi (scripts/test.sh asks by default). OpenMPI's mpirun, mpicc and
# headers, and libclang, which the mpi crate's bindgen uses to read mpi.h (about 30 s of apt).
if [[ ",${FEWSTEP_FEATURES:-}," == *,mpi,* ]]; then
  mpi_pkgs=()
  for p in openmpi-bin libopenmpi-dev libclang-dev; do
    dpkg -s "$p" >/dev/null 2>&1 || mpi_pkgs+=("$p")
  done
  if [ ${#mpi_pkgs[@]} -gt 0 ]; then
    echo "setup: installing ${mpi_pkgs[*]} (the mpi feature)" >&2
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${mpi_pkgs[@]}" >/dev/null
  fi
fi
