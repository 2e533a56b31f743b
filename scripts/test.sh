#!/usr/bin/env bash
# The test suite, from a fresh machine: system packages, models, one release build, Rust tests,
# the stack started the way scripts/run-stack.sh starts it, Python client tests, the browser
# end to end, load + kill -9, supply chain, Kubernetes manifests.
# Everything runs the release binaries users run (one profile: `cargo test --release` builds the
# binaries and the tests that start them). Usage: scripts/test.sh [extra cargo test args]
# The libFuzzer campaign is not here (an instrumented rebuild of the whole tree): run
# scripts/fuzz.sh by hand or on a schedule; `cargo test` replays the corpus and every crash.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
trap stage_end EXIT

stage "system packages and tools (apt, kubectl)"
ensure_rust
ensure_tools
ensure_debian_packages "${DEBIAN_PACKAGES[@]}"
ensure_kubectl
# OpenBLAS is installed above: the kernel tests must find it (not compare candle with candle).
export VOICE_EXPECT_BLAS=1

stage "release build: binaries and tests (target dir $CARGO_TARGET_DIR)"
python3 "$REPO_ROOT/fuzz/make_seeds.py" > /dev/null   # the fuzz targets' seed corpus (replayed by voice-fuzz)
# What `cargo test --release` reuses (same targets, same features), plus the bench binaries
# (load-test, http-fuzz). Not --all-targets: that adds a bench-mode harness of every lib and bin.
cargo build --release --workspace --lib --bins --tests --examples --locked

stage "models into $VOICE_MODELS_DIR"
"$CARGO_TARGET_DIR/release/voice-models" fetch whisper-tiny.en whisper-base jfk-sample smollm2-135m-instruct gemma3-270m all-minilm-l6-v2 kokoro-82m silero-vad smart-turn-v3 livekit-ffi

stage "PostgreSQL + pgvector and livekit-server (built from source once, cached)"
VOICE_PG_BIN=$("$REPO_ROOT/scripts/fetch-postgres.sh")
export VOICE_PG_BIN
LIVEKIT_SERVER_BIN=$("$REPO_ROOT/scripts/fetch-livekit-server.sh")
export LIVEKIT_SERVER_BIN

stage "cargo test --release"
cargo test --release --workspace --locked "$@"

# The README's first command, as a user runs it (its own release build of the six binaries,
# per-package feature resolution as users get it), up to every part ready, then stopped. The
# binaries it leaves in target/release are the ones every test below starts.
stage "scripts/run-stack.sh --check (the README's first command)"
"$REPO_ROOT/scripts/run-stack.sh" --check

BIN_DIR="$CARGO_TARGET_DIR/release"
stage "Python client tests (official openai client)"
ensure_venv "$CACHE_ROOT/venv-tests" tests/python/requirements.txt
VOICE_BIN_DIR="$BIN_DIR" "$CACHE_ROOT/venv-tests/bin/python" -m pytest -q tests/python

stage "frontend smoke test and the whole stack end to end in headless Chromium (tests/e2e)"
"$REPO_ROOT/scripts/build-frontend.sh"
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
node tests/e2e/frontend_smoke.mjs > /dev/null
E2E_BIN_DIR="$BIN_DIR" tests/e2e/stack_e2e.sh

stage "load (64 clients), kill -9 under load and HTTP body fuzzing, every service (benches/run-load-test.sh)"
# A shorter queue than the default 32 so the queued requests drain in seconds on 2 cores.
LOAD_BIN_DIR="$BIN_DIR" LOAD_SECONDS=${LOAD_SECONDS:-10} HTTP_FUZZ_SECONDS=${HTTP_FUZZ_SECONDS:-20} \
  LOAD_SERVICE_FLAGS="--max-queue 8" "$REPO_ROOT/benches/run-load-test.sh"

stage "supply chain: cargo-deny licenses, bans, sources (scripts/supply-chain.sh)"
"$REPO_ROOT/scripts/supply-chain.sh"

# Its `rust` step is voice-deploy-tests, which `cargo test --workspace` ran above.
stage "Kubernetes manifests, scripts and images (deploy/validate.sh)"
"$REPO_ROOT/deploy/validate.sh" --skip rust
stage_end
log "all tests passed"
