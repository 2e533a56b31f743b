#!/usr/bin/env bash
# Load and kill -9 tests of every service, on loopback, with the `load-test` client
# (benches/src/load_test.rs): for each service,
#   1. LOAD_CLIENTS (64) concurrent clients for LOAD_SECONDS (20): zero failures (every request
#      served correctly or refused with 429/503 + Retry-After), peak RSS, p50/p99;
#   2. the same load with `kill -9` of the service at LOAD_KILL_AT (5 s) and a restart on the same
#      ports: only requests in flight at the kill or sent while it was down may fail (transport
#      errors), served correctly again after the restart, voice-embed loses no acknowledged document;
#   3. HTTP_FUZZ_SECONDS (30; 0 skips) of `http-fuzz` (benches/src/http_fuzz.rs): mutated JSON and
#      multipart bodies of every route; no 5xx (bar 503 + Retry-After), no dropped connection, alive after.
# Results: one JSON object per run in $LOAD_RESULTS (default /tmp/voice-load/results.jsonl) and a
# table on stdout. Exit 1 if any run failed.
#
# Usage: benches/run-load-test.sh [stt llm tts embed agent]
# Env: LOAD_BIN_DIR (default $CARGO_TARGET_DIR/release), LOAD_CLIENTS,
#      LOAD_SECONDS, LOAD_KILL_AT, LOAD_KILL=0 to skip the kill runs, LOAD_DEVICE (cpu),
#      LOAD_SERVICE_FLAGS (added to every service, e.g. "--max-queue 8": CI drains faster).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"

BIN=${LOAD_BIN_DIR:-$CARGO_TARGET_DIR/release}
CLIENTS=${LOAD_CLIENTS:-64}
SECONDS_PER_RUN=${LOAD_SECONDS:-20}
KILL_AT=${LOAD_KILL_AT:-5}
DEVICE=${LOAD_DEVICE:-cpu}
WORK=$(mktemp -d /tmp/voice-load.XXXXXX)
RESULTS=${LOAD_RESULTS:-/tmp/voice-load/results.jsonl}
mkdir -p "$(dirname "$RESULTS")"
: > "$RESULTS"
services=("$@")
[[ ${#services[@]} -gt 0 ]] || services=(stt llm tts embed agent)

for b in load-test http-fuzz voice-stt voice-llm voice-tts voice-embed voice-agent; do
  [[ -x $BIN/$b ]] || { echo "missing $BIN/$b: cargo build --release --workspace (or set LOAD_BIN_DIR)" >&2; exit 1; }
done

cleanup() {
  for f in "$WORK"/*.pid; do [[ -f $f ]] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The command line that starts service $1 on ports $2/$3, writing its pid to $WORK/$1.pid.
start_cmd() {
  local svc=$1 port=$2 grpc=$3 extra=""
  case $svc in
    stt) extra="--model whisper-tiny.en" ;;
    llm) extra="--model smollm2-135m-instruct" ;;
    embed) extra="--data-dir $WORK/rag" ;;
    agent) extra="--livekit-url ws://127.0.0.1:1 --frontend-port 0" ;;
  esac
  echo "VOICE_AGENT_LIVEKIT_API_KEY=load VOICE_AGENT_LIVEKIT_API_SECRET=load-test-secret-0123456789abcdef \
$BIN/voice-$svc --device $DEVICE --log-format json --port $port --grpc-port $grpc $extra ${LOAD_SERVICE_FLAGS:-} >> $WORK/$svc.log 2>&1 & echo \$! > $WORK/$svc.pid"
}

wait_ready() { # port pidfile
  local deadline=$((SECONDS + 300))
  until curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; do
    kill -0 "$(cat "$2")" 2>/dev/null || { echo "the service exited; log:" >&2; tail -n 20 "${2%.pid}.log" >&2; return 1; }
    (( SECONDS < deadline )) || { echo "not ready in 300 s" >&2; return 1; }
    sleep 0.3
  done
}

failed=0
run() { # svc mode
  local svc=$1 mode=$2 port grpc cmd
  port=$(free_port); grpc=$(free_port)
  cmd=$(start_cmd "$svc" "$port" "$grpc")
  sh -c "$cmd"
  wait_ready "$port" "$WORK/$svc.pid"
  local args=(--target "$svc" --url "http://127.0.0.1:$port" --clients "$CLIENTS" --duration "${SECONDS_PER_RUN}s" --pid "$(cat "$WORK/$svc.pid")")
  local tool=load-test
  if [[ $mode == kill ]]; then
    args+=(--kill-at "${KILL_AT}s" --restart "$cmd" --pid-file "$WORK/$svc.pid")
  elif [[ $mode == fuzz ]]; then
    tool=http-fuzz
    args=(--target "$svc" --url "http://127.0.0.1:$port" --duration "${HTTP_FUZZ_SECONDS:-30}s" --crashes "${HTTP_FUZZ_CRASHES:-/tmp/voice-http-fuzz}")
  fi
  log "$tool $svc ($mode)"
  local out status=0
  out=$("$BIN/$tool" "${args[@]}" 2> "$WORK/$svc-$mode.err") || status=$?
  cat "$WORK/$svc-$mode.err" >&2
  echo "$out" | python3 -c "import json,sys; d=json.loads(sys.stdin.read().strip() or '{}'); d['mode']='$mode'; d['ok']=$status==0; print(json.dumps(d))" >> "$RESULTS"
  kill -TERM "$(cat "$WORK/$svc.pid")" 2>/dev/null || true
  sleep 1
  kill -9 "$(cat "$WORK/$svc.pid")" 2>/dev/null || true
  rm -f "$WORK/$svc.pid"
  [[ $status == 0 ]] || { log "load-test $svc ($mode) FAILED; service log tail:"; tail -n 15 "$WORK/$svc.log" >&2; failed=1; }
}

for svc in "${services[@]}"; do
  run "$svc" load
  [[ ${LOAD_KILL:-1} == 0 ]] || run "$svc" kill
  [[ ${HTTP_FUZZ_SECONDS:-30} == 0 ]] || run "$svc" fuzz
done

python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
fuzz = [r for r in rows if r.get("mode") == "fuzz"]
rows = [r for r in rows if r.get("mode") != "fuzz"]
print("| service | run | clients | s | requests | served | 429 | 503 | failures | served/s | p50 ms | p99 ms | peak RSS MB | kill: errors in window, served again at | docs acked/lost | ok |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    k = r.get("kill") or {}
    kill = f"{k.get('transport_errors_in_window')} errors, {k.get('killed_at_ms')} -> {k.get('served_again_at_ms')} ms" if k else "-"
    docs = f"{r.get('acknowledged_documents')}/{r.get('lost_documents')}" if r.get("target") == "embed" else "-"
    print(f"| {r.get('target')} | {r['mode']} | {r.get('clients')} | {r.get('seconds')} | {r.get('requests')} | {r.get('served')} | {r.get('refused_429')} | {r.get('refused_503')} | {r.get('failures')} | {r.get('served_per_second')} | {r.get('p50_ms')} | {r.get('p99_ms')} | {r.get('peak_rss_mb')} | {kill} | {docs} | {'yes' if r['ok'] else 'NO'} |")
if fuzz:
    print()
    print("| service | http-fuzz s | executions | failures | statuses | alive after | ok |")
    print("|---|---|---|---|---|---|---|")
    for r in fuzz:
        st = ", ".join(f"{k}: {v}" for k, v in (r.get("statuses") or {}).items())
        print(f"| {r.get('target')} | {r.get('seconds')} | {r.get('executions')} | {r.get('failures')} | {st} | {r.get('alive_after')} | {'yes' if r['ok'] else 'NO'} |")
PY
exit $failed
