#!/usr/bin/env bash
# Run the gloo control plane locally from a release build.
#   GLOO_DATA_DIR     (default: <repo>/.data)
#   GLOO_TOKENS_FILE  (default: <repo>/deploy/local/tokens.yaml)
#   CARGO_TARGET_DIR  honoured; extra arguments are passed to gloo-core.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

bash "$REPO/scripts/setup.sh"

LOCKED=()
[[ -f Cargo.lock ]] && LOCKED=(--locked)
cargo build --release -p gloo-core ${LOCKED[@]+"${LOCKED[@]}"}

# Where cargo put the binary: ask cargo (covers CARGO_TARGET_DIR, relative
# values and build.target-dir in .cargo/config.toml); fall back to the env var.
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps ${LOCKED[@]+"${LOCKED[@]}"} 2>/dev/null \
    | jq -r '.target_directory' 2>/dev/null || true)"
if [[ -z $TARGET_DIR || $TARGET_DIR == null ]]; then
    TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
    [[ $TARGET_DIR == /* ]] || TARGET_DIR="$REPO/$TARGET_DIR"
fi
GLOO_CORE="$TARGET_DIR/release/gloo-core"
[[ -x $GLOO_CORE ]] || { echo "run.sh: no binary at $GLOO_CORE" >&2; exit 1; }

DATA_DIR="${GLOO_DATA_DIR:-$REPO/.data}"
TOKENS_FILE="${GLOO_TOKENS_FILE:-$REPO/deploy/local/tokens.yaml}"
mkdir -p "$DATA_DIR"

# Envoy from the project venv, for gloo-core and for the section below.
export PATH="$REPO/.venv/bin:$PATH"
GLOO_ENVOY_BIN="$(echo "$REPO"/.venv/lib/python3*/site-packages/envoy/_bin/envoy)"
export GLOO_ENVOY_BIN

# ---------------------------------------------------------------------------
# TODO(later): start Envoy and the discovery services here.
#   - Envoy: "$GLOO_ENVOY_BIN" -c <bootstrap pointing at gloo-core's xDS port>
#   - discovery services (function discovery, upstream discovery, ...)
# Once anything is started in the background, replace the `exec` below with a
# supervised start (`gloo-core ... & wait`, plus a `trap` that stops the
# background processes by their PIDs on EXIT/INT/TERM) so nothing is orphaned.
# ---------------------------------------------------------------------------

echo "run.sh: exec $GLOO_CORE --data-dir $DATA_DIR --tokens-file $TOKENS_FILE $*" >&2
exec "$GLOO_CORE" --data-dir "$DATA_DIR" --tokens-file "$TOKENS_FILE" "$@"
