#!/usr/bin/env bash
# Set up and run the stack as it exists today: fetch the speech-to-text model and start
# voice-stt (release build) on http://127.0.0.1:8001 (gRPC 9001). Ctrl-C stops it cleanly.
#
# Environment: VOICE_STT_MODEL (default whisper-tiny.en), VOICE_STT_DEVICE (auto|cpu|cuda[:N]),
# CARGO_FEATURES (e.g. "--features voice-stt/cuda" for a CUDA build), and any VOICE_STT_* flag.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
ensure_rust

model="${VOICE_STT_MODEL:-whisper-tiny.en}"
log "building voice-stt and voice-models (release)"
# shellcheck disable=SC2086
cargo build --release --locked -p voice-stt -p voice-models ${CARGO_FEATURES:-}
log "fetching $model"
"$CARGO_TARGET_DIR/release/voice-models" fetch "$model"
log "starting voice-stt: http://127.0.0.1:${VOICE_STT_PORT:-8001}  (try: curl localhost:${VOICE_STT_PORT:-8001}/v1/audio/transcriptions -F file=@speech.wav)"
exec "$CARGO_TARGET_DIR/release/voice-stt" --model "$model" --log-format "${VOICE_STT_LOG_FORMAT:-text}" "$@"
