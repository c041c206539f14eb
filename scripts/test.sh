#!/usr/bin/env bash
# The test command: set-up (idempotent), then every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo test --all-targets "$@"
