#!/usr/bin/env bash
# Set up and run the whole stack on this machine (release builds, no Docker): fetch the models,
# build livekit-server and the frontend, and start
#   livekit-server ws://127.0.0.1:7880 (--dev: key devkey, secret secret; loopback only)
#   voice-stt  http://127.0.0.1:8001 (gRPC 9001)   speech-to-text
#   voice-llm  http://127.0.0.1:8002 (gRPC 9002)   LLM chat/completions
#   voice-embed http://127.0.0.1:8003 (gRPC 9003)  embeddings + RAG (embedded store in ~/.local/share/voice-ai/rag)
#   voice-tts  http://127.0.0.1:8004 (gRPC 9004)   text-to-speech (Kokoro-82M; needs espeak-ng)
#   voice-agent http://127.0.0.1:8005 (gRPC 9005)  the voice agent (Silero VAD, Smart Turn, LiveKit's core)
#   frontend   http://127.0.0.1:3000               open this in Chromium, press Connect, talk
# Ctrl-C (or SIGTERM) stops them cleanly; if one exits, the others are stopped too.
#
# Usage: scripts/run-stack.sh [--check]
#   --check  start everything as above, wait until every part answers (/readyz of the five
#            services, livekit-server, the frontend page, a LiveKit token from the agent), print
#            how long that took, then stop them all and exit 0 (non-zero if a part failed or was
#            not ready within VOICE_STACK_READY_TIMEOUT seconds, default 600). CI runs this.
#
# Environment: VOICE_STT_MODEL (default whisper-tiny.en), VOICE_LLM_MODEL (default
# smollm2-135m-instruct), VOICE_EMBED_MODEL (default all-minilm-l6-v2), VOICE_TTS_MODEL (default
# kokoro-82m), VOICE_AGENT_COLLECTION (a voice-embed collection to answer from), VOICE_<SERVICE>_DEVICE (auto|cpu|cuda[:N]), any VOICE_<SERVICE>_* flag,
# CARGO_FEATURES (e.g. "--features voice-stt/cuda,voice-llm/cuda" for a CUDA build).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac
ensure_rust
ensure_tools
# espeak-ng reads the words voice-tts's lexicons lack; OpenBLAS speeds up every CPU model.
ensure_debian_packages espeak-ng libopenblas0-pthread
command -v npm >/dev/null || ensure_debian_packages nodejs npm

stt_model="${VOICE_STT_MODEL:-whisper-tiny.en}"
llm_model="${VOICE_LLM_MODEL:-smollm2-135m-instruct}"
embed_model="${VOICE_EMBED_MODEL:-all-minilm-l6-v2}"
tts_model="${VOICE_TTS_MODEL:-kokoro-82m}"
log "building voice-stt, voice-llm, voice-embed, voice-tts, voice-agent and voice-models (release)"
# shellcheck disable=SC2086
cargo build --release --locked -p voice-stt -p voice-llm -p voice-embed -p voice-tts -p voice-agent -p voice-models ${CARGO_FEATURES:-}
log "fetching $stt_model $llm_model $embed_model $tts_model silero-vad smart-turn-v3 livekit-ffi"
"$CARGO_TARGET_DIR/release/voice-models" fetch "$stt_model" "$llm_model" "$embed_model" "$tts_model" silero-vad smart-turn-v3 livekit-ffi
livekit_server=$("$REPO_ROOT/scripts/fetch-livekit-server.sh")
"$REPO_ROOT/scripts/build-frontend.sh"

pids=()
stop() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait || true
}
trap stop INT TERM EXIT
"$livekit_server" --dev --bind 127.0.0.1 > "${TMPDIR:-/tmp}/livekit-server.log" 2>&1 &
pids+=($!)
"$CARGO_TARGET_DIR/release/voice-stt" --model "$stt_model" --log-format "${VOICE_STT_LOG_FORMAT:-text}" &
pids+=($!)
"$CARGO_TARGET_DIR/release/voice-llm" --model "$llm_model" --cpu-nice "${VOICE_LLM_CPU_NICE:-10}" --log-format "${VOICE_LLM_LOG_FORMAT:-text}" &
pids+=($!)
"$CARGO_TARGET_DIR/release/voice-embed" --model "$embed_model" --log-format "${VOICE_EMBED_LOG_FORMAT:-text}" &
pids+=($!)
"$CARGO_TARGET_DIR/release/voice-tts" --model "$tts_model" --log-format "${VOICE_TTS_LOG_FORMAT:-text}" &
pids+=($!)
# livekit-server --dev's well-known development key; use real keys (files) anywhere else.
VOICE_AGENT_LIVEKIT_API_KEY="${VOICE_AGENT_LIVEKIT_API_KEY:-devkey}" VOICE_AGENT_LIVEKIT_API_SECRET="${VOICE_AGENT_LIVEKIT_API_SECRET:-secret}" \
  "$CARGO_TARGET_DIR/release/voice-agent" --frontend-dir "$REPO_ROOT/frontend/dist" --log-format "${VOICE_AGENT_LOG_FORMAT:-text}" &
pids+=($!)
log "voice-stt: curl localhost:${VOICE_STT_PORT:-8001}/v1/audio/transcriptions -F file=@speech.wav"
log "voice-llm: curl localhost:${VOICE_LLM_PORT:-8002}/v1/chat/completions -H 'content-type: application/json' -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}]}'"
log "voice-embed: curl localhost:${VOICE_EMBED_PORT:-8003}/v1/embeddings -H 'content-type: application/json' -d '{\"input\":\"Hello\"}'"
log "voice-tts: curl localhost:${VOICE_TTS_PORT:-8004}/v1/audio/speech -H 'content-type: application/json' -d '{\"input\":\"Hello there!\",\"voice\":\"af_heart\"}' -o hello.wav"
if [ "$check" = 1 ]; then
  # Every part must answer; a process that exits while we wait fails the check at once.
  t0=$(date +%s)
  deadline=$(( t0 + ${VOICE_STACK_READY_TIMEOUT:-600} ))
  wait_for() { # name command...
    local name=$1; shift
    until "$@" >/dev/null 2>&1; do
      for p in "${pids[@]}"; do
        kill -0 "$p" 2>/dev/null || { echo "run-stack --check: a process exited before $name was ready" >&2; exit 1; }
      done
      [ "$(date +%s)" -lt "$deadline" ] || { echo "run-stack --check: $name not ready in time" >&2; exit 1; }
      sleep 0.5
    done
    log "ready: $name ($(( $(date +%s) - t0 )) s)"
  }
  wait_for livekit-server curl -fsS "http://127.0.0.1:7880/"
  for svc in stt:8001 llm:8002 embed:8003 tts:8004 agent:8005; do
    name=${svc%%:*}; port_env="VOICE_${name^^}_PORT"; port=${!port_env:-${svc##*:}}
    wait_for "voice-$name" curl -fsS "http://127.0.0.1:$port/readyz"
  done
  web="http://127.0.0.1:${VOICE_AGENT_FRONTEND_PORT:-3000}"
  wait_for "frontend" sh -c "curl -fsS '$web/' | grep -q '<div id=\"root\">'"
  wait_for "LiveKit token from the agent" sh -c "curl -fsS -X POST -H 'content-type: application/json' -d '{\"room\":\"run-stack-check\",\"identity\":\"check\"}' '$web/api/token' | grep -q token"
  log "run-stack --check: the whole stack is up ($(( $(date +%s) - t0 )) s after start); stopping it"
  exit 0
fi
log "open http://127.0.0.1:${VOICE_AGENT_FRONTEND_PORT:-3000} in Chromium, press Connect and talk (the models take a few seconds to load)"
# Whichever exits first ends the run.
wait -n "${pids[@]}"
