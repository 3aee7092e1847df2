#!/usr/bin/env bash
# Run the gloo control plane locally from a release build.
#   GLOO_DATA_DIR     (default: <repo>/.data)
#   GLOO_TOKENS_FILE  (default: <data dir>/tokens.yaml, created on first run with
#                     one admin token kept in <data dir>/admin.token, mode 0600)
#   GLOO_DISCOVERY    discovery services to run beside gloo-core, comma-separated:
#                     k8s, lambda, gcf, openapi (default: none). Each gets its own token
#                     (appended to the tokens file on first use, kept in
#                     <data dir>/discovery-<name>.token), metrics on 127.0.0.1:9101.. in
#                     that order, and the extra flags in GLOO_DISCOVERY_<NAME>_ARGS
#                     (e.g. GLOO_DISCOVERY_K8S_ARGS="--kubeconfig $HOME/.kube/config").
#   GLOO_STORAGE_LISTEN  gloo-core's storage API address (default 127.0.0.1:9980).
#   CARGO_TARGET_DIR  honoured; extra arguments are passed to gloo-core.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

bash "$REPO/scripts/setup.sh"

LOCKED=()
[[ -f Cargo.lock ]] && LOCKED=(--locked)
DISCOVERY=()
IFS=',' read -r -a DISCOVERY <<< "${GLOO_DISCOVERY:-}"
BUILD=(-p gloo-core)
for d in ${DISCOVERY[@]+"${DISCOVERY[@]}"}; do
    case $d in
        k8s|lambda|gcf|openapi) BUILD+=(-p "discovery-$d") ;;
        *) echo "run.sh: GLOO_DISCOVERY: unknown discovery service '$d' (k8s, lambda, gcf, openapi)" >&2; exit 2 ;;
    esac
done
cargo build --release "${BUILD[@]}" ${LOCKED[@]+"${LOCKED[@]}"}

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
mkdir -p "$DATA_DIR"
TOKENS_FILE="${GLOO_TOKENS_FILE:-$DATA_DIR/tokens.yaml}"
if [[ -z ${GLOO_TOKENS_FILE:-} && ! -f $TOKENS_FILE ]]; then
    # First local run: one admin token, random, readable only by this user. The tokens file
    # keeps only its SHA-256, so the token itself lives in admin.token alone.
    umask 077
    token="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    printf '%s\n' "$token" > "$DATA_DIR/admin.token"
    digest="$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)"
    printf 'tokens:\n  - name: admin\n    tokenSha256: "%s"\n    role: admin\n' "$digest" > "$TOKENS_FILE"
    echo "run.sh: created $TOKENS_FILE; the admin token is in $DATA_DIR/admin.token" >&2
    echo "run.sh:   export GLOO_TOKEN=\$(cat $DATA_DIR/admin.token)   # for glooctl" >&2
fi

# A token per discovery service, added to the tokens file the first time it is enabled.
discovery_token() {
    local name="discovery-$1" kinds="$2" secrets="$3" file="$DATA_DIR/discovery-$1.token"
    if [[ ! -f $file ]] || ! grep -q "name: $name\$" "$TOKENS_FILE"; then
        umask 077
        local token digest
        token="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
        printf '%s\n' "$token" > "$file"
        digest="$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)"
        printf '  - name: %s\n    tokenSha256: "%s"\n    role: discovery\n    kinds: [%s]\n    readSecrets: %s\n' \
            "$name" "$digest" "$kinds" "$secrets" >> "$TOKENS_FILE"
        echo "run.sh: added $name to $TOKENS_FILE (token in $file)" >&2
    fi
}
for d in ${DISCOVERY[@]+"${DISCOVERY[@]}"}; do
    case $d in
        k8s) discovery_token k8s "Upstream, Endpoints" false ;;
        lambda) discovery_token lambda "Function" true ;;
        gcf) discovery_token gcf "Function" true ;;
        openapi) discovery_token openapi "Function" false ;;
    esac
done

# Envoy from the project venv, for gloo-core and for the section below.
export PATH="$REPO/.venv/bin:$PATH"
GLOO_ENVOY_BIN="$(echo "$REPO"/.venv/lib/python3*/site-packages/envoy/_bin/envoy)"
export GLOO_ENVOY_BIN

STORAGE="${GLOO_STORAGE_LISTEN:-127.0.0.1:9980}"
ENVOY_ADMIN_PORT="${GLOO_ENVOY_ADMIN_PORT:-19000}"
XDS_PORT="${GLOO_XDS_PORT:-9977}"
BOOTSTRAP="$DATA_DIR/envoy-bootstrap.yaml"
sed -e "s/port_value: 9977/port_value: $XDS_PORT/" \
    -e "s/port_value: 19000/port_value: $ENVOY_ADMIN_PORT/" \
    "$REPO/deploy/envoy/bootstrap.yaml" > "$BOOTSTRAP"

# gloo-core and Envoy run together; stopping this script (Ctrl-C, SIGTERM) stops both, and
# if either exits, the other is stopped too.
pids=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

echo "run.sh: gloo-core --data-dir $DATA_DIR --tokens-file $TOKENS_FILE --xds-listen 127.0.0.1:$XDS_PORT --storage-listen $STORAGE $*" >&2
"$GLOO_CORE" --data-dir "$DATA_DIR" --tokens-file "$TOKENS_FILE" \
    --xds-listen "127.0.0.1:$XDS_PORT" --storage-listen "$STORAGE" "$@" &
pids+=($!)
echo "run.sh: envoy -c $BOOTSTRAP (admin on 127.0.0.1:$ENVOY_ADMIN_PORT)" >&2
"$GLOO_ENVOY_BIN" -c "$BOOTSTRAP" --base-id "$ENVOY_ADMIN_PORT" --log-level warn &
pids+=($!)
port=9101
for d in ${DISCOVERY[@]+"${DISCOVERY[@]}"}; do
    var="GLOO_DISCOVERY_${d^^}_ARGS"
    read -r -a extra <<< "${!var:-}"
    echo "run.sh: discovery-$d (metrics on 127.0.0.1:$port) ${extra[*]+"${extra[*]}"}" >&2
    "$TARGET_DIR/release/discovery-$d" --storage "http://$STORAGE" \
        --token-file "$DATA_DIR/discovery-$d.token" --metrics-listen "127.0.0.1:$port" \
        ${extra[@]+"${extra[@]}"} &
    pids+=($!)
    port=$((port + 1))
done
echo "run.sh: apply a Gateway (see examples/petstore.yaml) to open a listener" >&2

# Whichever stops first ends the run.
wait -n "${pids[@]}"
status=$?
echo "run.sh: a process exited (status $status); stopping the rest" >&2
exit "$status"
