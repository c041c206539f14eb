#!/usr/bin/env bash
# The test command: set-up (idempotent), the dependency checks, then every test. `.ci/run` calls
# exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests run once with the `mpi` feature (a superset: its 2-rank tests in tests/mpi.rs run
# under mpirun); FEWSTEP_FEATURES= scripts/test.sh runs the default build's tests instead.
export FEWSTEP_FEATURES=${FEWSTEP_FEATURES-mpi}
source scripts/setup.sh
# The dependency tree (deny.toml): security advisories, licences, duplicate versions, sources.
# Advisories need the RustSec database from GitHub; without a network the last fetched copy is
# used, and with none the other checks run and the skipped advisories are said loudly.
ensure_cargo_deny
db_dir=${CARGO_HOME:-$HOME/.cargo}/advisory-dbs
if fetch_err=$(cargo deny fetch db 2>&1); then
  cargo deny check
else
  echo "test.sh: cannot fetch the RustSec advisory database: ${fetch_err##*$'\n'}" >&2
  if compgen -G "$db_dir/*/crates" >/dev/null; then
    echo "test.sh: checking advisories against the copy fetched earlier in $db_dir" >&2
    cargo deny --offline check
  else
    echo "test.sh: WARNING: no advisory database here: advisories NOT checked" >&2
    cargo deny --offline check bans licenses sources
  fi
fi
# --workspace: the example plugin crate (examples/tract) has tests too.
cargo test --workspace --all-targets --features "$FEWSTEP_FEATURES" "$@"
