#!/usr/bin/env bash
# The test command: set-up (idempotent), then every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# --workspace: the example plugin crate (examples/tract) has tests too.
cargo test --workspace --all-targets "$@"
