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

ensure_rust() {
  if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust from https://rustup.rs (stable >= 1.85)" >&2
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
