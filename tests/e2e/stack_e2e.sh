#!/usr/bin/env bash
# The whole stack, all real, in a headless browser: livekit-server, voice-stt, voice-llm,
# voice-embed, voice-tts, voice-agent (serving the built frontend), then Chromium with a WAV as
# its microphone (tests/e2e/voice_e2e.mjs):
#   1. a question answered from a RAG document ingested first (the answer is not general knowledge)
#   2. a general question (the capital of France)
#   3. a barge-in: the user talks over a long answer (played once the page hears the agent); the
#      agent must detect it within --min-interruption + 400 ms and be silent 300 ms beyond the
#      downlink delay measured at that moment
# voice-llm, voice-embed and voice-tts run as deployed with security on: TLS on both ports (a
# throw-away certificate) and API keys; the agent reaches them over https with the CA and the key.
# At the end no log of any process may contain the API key or the LiveKit secret.
# Each run records the agent's remote track in the page and transcribes it with voice-stt; the
# per-turn metrics must arrive, be in order, and their voice-to-voice agree with the one the page
# measures; the agent's Prometheus histograms must count them.
#
# Usage: tests/e2e/stack_e2e.sh   (after `cargo build --release --workspace`; scripts/test.sh runs it)
# Env: E2E_BIN_DIR (default $CARGO_TARGET_DIR/release), LIVEKIT_SERVER_BIN, E2E_ARTIFACTS (a dir to keep).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
cd "$REPO_ROOT"

BIN=${E2E_BIN_DIR:-$CARGO_TARGET_DIR/release}
LIVEKIT_SERVER_BIN=${LIVEKIT_SERVER_BIN:-$("$REPO_ROOT/scripts/fetch-livekit-server.sh")}
WORK=$(mktemp -d /tmp/voice-e2e.XXXXXX)
ART=${E2E_ARTIFACTS:-$WORK/artifacts}
mkdir -p "$ART"
# Ports away from a developer's running stack.
LK=17880; STT=18001; LLM=18002; EMB=18003; TTS=18004; AGENT=18005; WEB=13000
KEY=devkey
SECRET=voice-ai-e2e-livekit-secret-0123456789abcdef
API_KEY=voice-ai-e2e-api-key-5f1c0d9e
mkdir -p "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
  -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null
# What curl needs to reach the secured services (harmless for the plain ones).
CURL=(curl --cacert "$WORK/tls/cert.pem" -H "authorization: Bearer $API_KEY")
secure=(--tls-cert "$WORK/tls/cert.pem" --tls-key "$WORK/tls/key.pem" --api-key "$API_KEY")

pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ $rc != 0 ]]; then
    for f in "$WORK"/*.log; do echo "---- $(basename "$f") (tail)" >&2; tail -n 25 "$f" >&2; done
  fi
  [[ -n ${E2E_ARTIFACTS:-} ]] || rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT INT TERM

wait_ready() { # name url
  local deadline=$((SECONDS + 240))
  until "${CURL[@]}" -fsS "$2/readyz" >/dev/null 2>&1; do
    if (( SECONDS > deadline )); then log "$1 not ready"; return 1; fi
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { log "a process exited while waiting for $1"; return 1; }; done
    sleep 0.5
  done
}

log "frontend build and the browser driver"
"$REPO_ROOT/scripts/build-frontend.sh"
(cd tests/e2e && [[ -d node_modules/playwright-core ]] || npm ci --no-audit --no-fund --loglevel=error)

log "livekit-server on 127.0.0.1:$LK"
"$LIVEKIT_SERVER_BIN" --config-body "port: $LK
bind_addresses: [\"127.0.0.1\"]
rtc: {tcp_port: 17881, udp_port: 17882, node_ip: 127.0.0.1, use_external_ip: false}
keys: {$KEY: $SECRET}" > "$WORK/livekit.log" 2>&1 &
pids+=($!)

common=(--device cpu --log-format json)
"$BIN/voice-stt" "${common[@]}" --port $STT --grpc-port $((STT + 1000)) --model whisper-tiny.en > "$WORK/stt.log" 2>&1 &
pids+=($!)
wait_ready voice-stt http://127.0.0.1:$STT
"$BIN/voice-llm" "${common[@]}" "${secure[@]}" --port $LLM --grpc-port $((LLM + 1000)) --model smollm2-135m-instruct > "$WORK/llm.log" 2>&1 &
pids+=($!)
"$BIN/voice-embed" "${common[@]}" "${secure[@]}" --port $EMB --grpc-port $((EMB + 1000)) --data-dir "$WORK/rag" > "$WORK/embed.log" 2>&1 &
pids+=($!)
"$BIN/voice-tts" "${common[@]}" "${secure[@]}" --port $TTS --grpc-port $((TTS + 1000)) > "$WORK/tts.log" 2>&1 &
pids+=($!)
wait_ready voice-llm https://127.0.0.1:$LLM
wait_ready voice-embed https://127.0.0.1:$EMB
wait_ready voice-tts https://127.0.0.1:$TTS

log "ingesting the RAG document"
"${CURL[@]}" -fsS https://127.0.0.1:$EMB/v1/collections/e2e-docs/documents -H 'content-type: application/json' -d '{"documents": [
  {"id": "office-cat", "text": "The office cat of the Voice AI team is called Biscuit. Biscuit is an orange tabby who sleeps on the warm GPU server."},
  {"id": "coffee", "text": "The team coffee machine is on the third floor next to the window. It only takes oat milk."}
]}' > /dev/null

log "voice-agent (frontend on http://127.0.0.1:$WEB)"
VOICE_AGENT_LIVEKIT_API_KEY=$KEY VOICE_AGENT_LIVEKIT_API_SECRET=$SECRET \
  "$BIN/voice-agent" "${common[@]}" --port $AGENT --grpc-port $((AGENT + 1000)) --frontend-port $WEB --frontend-dir "$REPO_ROOT/frontend/dist" \
  --livekit-url ws://127.0.0.1:$LK --stt-url http://127.0.0.1:$((STT + 1000)) --llm-url https://localhost:$((LLM + 1000)) \
  --embed-url https://localhost:$((EMB + 1000)) --tts-url https://localhost:$((TTS + 1000)) --collection e2e-docs \
  --backend-ca-file "$WORK/tls/cert.pem" --backend-api-key "$API_KEY" > "$WORK/agent.log" 2>&1 &
pids+=($!)
wait_ready voice-agent http://127.0.0.1:$AGENT

say() { # text voice out.wav: 16 kHz speech from voice-tts
  "${CURL[@]}" -fsS https://127.0.0.1:$TTS/v1/audio/speech -H 'content-type: application/json' \
    -d "{\"input\": \"$1\", \"voice\": \"$2\", \"response_format\": \"wav\"}" -o "$3"
}
say "What is the name of the office cat?" am_adam "$WORK/q_rag.wav"
say "What is the capital of France?" am_adam "$WORK/q_general.wav"
say "Please tell me a long story about a brave little dragon." am_adam "$WORK/q_story.wav"
say "Stop, stop. Wait a second." bf_emma "$WORK/q_stop.wav"

drive() { # name mode wav [voice_e2e options...]
  local name=$1 mode=$2 wav=$3; shift 3
  log "browser run: $name"
  local status=0
  node tests/e2e/voice_e2e.mjs --url http://127.0.0.1:$WEB --stt http://127.0.0.1:$STT --mode "$mode" --wav "$wav" \
    --artifacts "$ART/$name" "$@" > "$ART/$name.json" || status=$?
  node -e 'const s=require(process.argv[1]); console.error(JSON.stringify({ok:s.ok, failures:s.failures, heard:s.heard&&s.heard.text, agent:(s.agent_transcript||[]).map(t=>t.text), metrics:s.metrics, voice_to_voice:s.voice_to_voice, barge_in:s.barge_in}, null, 1))' "$ART/$name.json"
  return "$status"
}
# E2E_ONLY=barge-in (or rag, general) runs one part, for debugging.
only=${E2E_ONLY:-}
[[ -n $only && $only != rag ]] || drive rag answer "$WORK/q_rag.wav" --expect biscuit
[[ -n $only && $only != general ]] || drive general answer "$WORK/q_general.wav" --expect paris
# The barge-in: the page plays the interruption once it has heard the agent talk (aimed at its
# voice, not at a clock), so one run decides.
[[ -n $only && $only != barge-in ]] || drive barge-in barge-in "$WORK/q_story.wav" --interrupt-wav "$WORK/q_stop.wav" --audible-ms 1500 \
  || { log "barge-in failed"; exit 1; }

log "the agent's metrics"
metrics=$(curl -fsS http://127.0.0.1:$AGENT/metrics)
turns=$(grep -E '^voice_agent_voice_to_voice_seconds_count' <<<"$metrics" | awk '{print $2}')
interruptions=$(grep -E '^voice_agent_interruptions_total\{kind="true"\}' <<<"$metrics" | awk '{print $2}')
log "voice_to_voice_seconds_count=$turns interruptions_total{kind=true}=${interruptions:-0}"
if [[ -z $only ]]; then
  [[ ${turns%.*} -ge 3 ]] || { log "expected >= 3 turns with voice-to-voice latency in /metrics"; exit 1; }
  [[ ${interruptions:-0} -ge 1 ]] || { log "expected an interruption in /metrics"; exit 1; }
  stt_final=$(grep -E '^voice_agent_stage_seconds_count\{stage="stt_final"\}' <<<"$metrics" | awk '{print $2}')
  [[ ${stt_final:-0} -ge 3 ]] || { log "expected >= 3 stt_final stages in voice_agent_stage_seconds"; exit 1; }
fi
grep -q '"message":"turn"' "$WORK/agent.log" || { log "no per-turn log line"; exit 1; }
# The secured services refused a request without the key (and said so in OpenAI's shape).
code=$(curl --cacert "$WORK/tls/cert.pem" -s -o "$WORK/unauth.json" -w '%{http_code}' https://127.0.0.1:$LLM/v1/models)
[[ $code == 401 ]] && grep -q '"invalid_api_key"\|"authentication_error"' "$WORK/unauth.json" || { log "no 401 without the key: $code $(cat "$WORK/unauth.json")"; exit 1; }
if grep -l -e "$API_KEY" -e "$SECRET" "$WORK"/{stt,llm,embed,tts,agent}.log; then log "a secret reached the logs above"; exit 1; fi
log "end to end: all passed"
