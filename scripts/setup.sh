#!/usr/bin/env bash
# Installs what fewstep needs on a fresh Debian/Ubuntu machine, idempotently: a C toolchain and
# a cmake >= 3.26 (the HDF5 C library, 2.2.0, and zlib are built from source by the `hdf5`
# crate's `static` and `zlib` features and linked in; see Cargo.toml), plus a Rust toolchain
# when none is present. No system HDF5 is used.
set -euo pipefail

apt_install() {
  echo "setup: installing $*" >&2
  local sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$@" >/dev/null
}

# cc and make build HDF5 and zlib (through cmake and the cc crate).
need_pkgs=()
command -v cc >/dev/null 2>&1 || need_pkgs+=(build-essential)
command -v make >/dev/null 2>&1 || need_pkgs+=(make)
# rustup's installer is fetched with curl when there is no Rust yet.
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  command -v curl >/dev/null 2>&1 || need_pkgs+=(curl ca-certificates)
fi
[ ${#need_pkgs[@]} -eq 0 ] || apt_install "${need_pkgs[@]}"

# cmake >= 3.26 (HDF5 2.2's minimum; Debian 12 ships 3.25): the one on PATH when new enough,
# else PyPI's `cmake` in a venv of the user's cache, shared by every checkout. The `cmake`
# crate runs $CMAKE.
FEWSTEP_CMAKE_VERSION=3.31.10
cmake_ok() {
  local v
  v=$("$1" --version 2>/dev/null | sed -n 's/^cmake version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  # shellcheck disable=SC2086 # split "3 31" into major and minor
  [ -n "$v" ] && set -- $v && { [ "$1" -gt 3 ] || { [ "$1" -eq 3 ] && [ "$2" -ge 26 ]; }; }
}
if [ -n "${CMAKE:-}" ] && cmake_ok "$CMAKE"; then
  :
elif command -v cmake >/dev/null 2>&1 && cmake_ok cmake; then
  CMAKE=$(command -v cmake)
else
  cmake_venv=${XDG_CACHE_HOME:-$HOME/.cache}/fewstep/cmake-$FEWSTEP_CMAKE_VERSION
  if ! cmake_ok "$cmake_venv/bin/cmake"; then
    echo "setup: installing cmake $FEWSTEP_CMAKE_VERSION from PyPI into $cmake_venv" >&2
    rm -rf "$cmake_venv"
    # Debian/Ubuntu's python3 makes venvs only with python3-venv (ensurepip) installed.
    if ! python3 -m venv "$cmake_venv" >/dev/null 2>&1; then
      apt_install python3 python3-venv
      rm -rf "$cmake_venv"
      python3 -m venv "$cmake_venv"
    fi
    "$cmake_venv/bin/python" -m pip install -q --disable-pip-version-check \
      "cmake==$FEWSTEP_CMAKE_VERSION" >&2
  fi
  CMAKE=$cmake_venv/bin/cmake
fi
export CMAKE
# HDF5_DIR would make hdf5-metno-sys link that library instead of building its own.
unset HDF5_DIR

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    echo "setup: installing Rust with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >&2
  }
  export PATH="$HOME/.cargo/bin:$PATH"
fi

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
