#!/usr/bin/env bash
# Voice-to-voice latency of the agent's loop on this machine (release builds): agent-bench starts
# voice-stt (whisper-tiny.en), voice-llm (SmolLM2-135M) and voice-tts (Kokoro-82M) on the CPU and
# runs TURNS spoken questions through the loop (in-memory room, Silero VAD), then prints p50/p90
# per stage and of voice-to-voice. Results land in bench-results/agent.json.
#   TURNS=20 DEVICE=cpu benches/run-agent-bench.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"
out="$REPO_ROOT/bench-results"
mkdir -p "$out"
ensure_debian_packages libopenblas0-pthread espeak-ng

log "building agent-bench and the services (release)"
# shellcheck disable=SC2086
cargo build --release --locked -p voice-benches -p voice-stt -p voice-llm -p voice-tts -p voice-models ${CARGO_FEATURES:-}
"$CARGO_TARGET_DIR/release/voice-models" fetch whisper-tiny.en smollm2-135m-instruct kokoro-82m silero-vad smart-turn-v3 >/dev/null
"$CARGO_TARGET_DIR/release/agent-bench" --turns "${TURNS:-20}" --device "${DEVICE:-cpu}" --json "$out/agent.json"
