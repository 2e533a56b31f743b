#!/usr/bin/env bash
# The whole stack, all real, in a headless browser: livekit-server, voice-stt, voice-llm,
# voice-embed, voice-tts, voice-agent (serving the built frontend), then Chromium with a WAV as
# its microphone (tests/e2e/voice_e2e.mjs):
#   1. a question answered from a RAG document ingested first (the answer is not general knowledge)
#   2. a general question (the capital of France)
#   3. a barge-in: the user talks over a long answer; the agent must stop within 300 ms
# voice-llm, voice-embed and voice-tts run as deployed with security on: TLS on both ports (a
# throw-away certificate) and API keys; the agent reaches them over https with the CA and the key.
# At the end no log of any process may contain the API key or the LiveKit secret.
# Each run records the agent's remote track in the page and transcribes it with voice-stt; the
# per-turn metrics must arrive and add up, and the agent's Prometheus histograms must count them.
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
node tests/e2e/build_mic_wav.mjs --out "$WORK/mic_rag.wav" 2 "$WORK/q_rag.wav" 20 >&2
node tests/e2e/build_mic_wav.mjs --out "$WORK/mic_general.wav" 2 "$WORK/q_general.wav" 20 >&2

drive() { # name mode wav expect...
  local name=$1 mode=$2 wav=$3; shift 3
  local args=()
  for e in "$@"; do args+=(--expect "$e"); done
  log "browser run: $name"
  local status=0
  node tests/e2e/voice_e2e.mjs --url http://127.0.0.1:$WEB --stt http://127.0.0.1:$STT --mode "$mode" --wav "$wav" \
    --artifacts "$ART/$name" ${E2E_EXTRA:-} "${args[@]}" > "$ART/$name.json" || status=$?
  node -e 'const s=require(process.argv[1]); console.error(JSON.stringify({ok:s.ok, heard:s.heard&&s.heard.text, agent:(s.agent_transcript||[]).map(t=>t.text), metrics:s.metrics, barge_in:s.barge_in}, null, 1))' "$ART/$name.json"
  return "$status"
}
# E2E_ONLY=barge-in (or rag, general) runs one part, for debugging.
only=${E2E_ONLY:-}
[[ -n $only && $only != rag ]] || drive rag answer "$WORK/mic_rag.wav" biscuit
[[ -n $only && $only != general ]] || drive general answer "$WORK/mic_general.wav" paris
# The barge-in: the interruption must land while the agent is audibly talking, which a scripted
# microphone can only aim at: the gap covers end of turn + STT + LLM + TTS on this CPU (6-9 s in
# debug builds with the browser on the same 2 cores) and a few seconds of answer. When it lands
# in a pause between sentences the driver says "inconclusive" (exit 3) and we aim again.
rc=0
[[ -n $only && $only != barge-in ]] || for gap in ${E2E_BARGE_GAPS:-16 20 24 12 18 14}; do
  node tests/e2e/build_mic_wav.mjs --out "$WORK/mic_barge.wav" 2 "$WORK/q_story.wav" "$gap" "$WORK/q_stop.wav" 6 >&2
  set +e
  E2E_EXTRA="--audible-ms 500" drive barge-in barge-in "$WORK/mic_barge.wav"
  rc=$?
  set -e
  [[ $rc == 3 ]] || break
  log "the interruption fell in a pause of the agent's speech (gap $gap s); aiming again"
done
[[ $rc == 0 ]] || { log "barge-in failed"; exit 1; }

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
