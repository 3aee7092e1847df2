#!/usr/bin/env bash
# Full check of the workspace, as CI runs it (via .ci/run):
#   setup -> cargo fmt --check -> clippy -D warnings -> build tests -> run tests.
# Honours CARGO_TARGET_DIR. Uses --locked when Cargo.lock exists.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

section() { printf '\n==================== %s ====================\n' "$*"; }

section "setup"
bash "$REPO/scripts/setup.sh"

# Test tooling from the project venv: envoy, moto_server, functions-framework, ...
export PATH="$REPO/.venv/bin:$PATH"
GLOO_ENVOY_BIN="$(echo "$REPO"/.venv/lib/python3*/site-packages/envoy/_bin/envoy)"
[[ -x $GLOO_ENVOY_BIN ]] || { echo "test.sh: no Envoy binary at $GLOO_ENVOY_BIN" >&2; exit 1; }
export GLOO_ENVOY_BIN

LOCKED=()
[[ -f Cargo.lock ]] && LOCKED=(--locked)
[[ -f Cargo.toml ]] || { echo "test.sh: no Cargo.toml in $REPO" >&2; exit 1; }

echo "GLOO_ENVOY_BIN=$GLOO_ENVOY_BIN"
echo "CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-<default: $REPO/target>}"
echo "cargo flags: ${LOCKED[*]:-<none: no Cargo.lock>}"

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --workspace --all-targets ${LOCKED[@]+"${LOCKED[@]}"} -- -D warnings

section "cargo build (the binaries the end-to-end tests start) and the tests"
# `cargo test` builds a package's binaries only for packages with integration tests; the e2e
# tests start gloo-core and glooctl themselves, so build every binary first.
cargo build --workspace --bins ${LOCKED[@]+"${LOCKED[@]}"}
cargo test --workspace ${LOCKED[@]+"${LOCKED[@]}"} --no-run

section "cargo test"
cargo test --workspace ${LOCKED[@]+"${LOCKED[@]}"}

section "all checks passed"
