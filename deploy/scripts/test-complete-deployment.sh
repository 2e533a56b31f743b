#!/usr/bin/env bash
# End-to-end checks of a deployed voice-ai stack, beyond verify-deployment.sh:
#   1. verify-deployment.sh (security labels, policies, availability, devices, metrics)
#   2. the APIs: GET /v1/models on each model service; with --audio, a real transcription (both
#      with the bearer key voice-agent sends, read from the voice-api-keys Secret)
#   3. every pod runs as non-root with a read-only root filesystem
#   4. the HPAs exist and the queue-depth custom metric is served (prometheus-adapter)
#   5. the ingress answers over TLS with the security headers
#   6. with --disruption: a voice-stt pod is deleted and the service recovers
#
# Usage: deploy/scripts/test-complete-deployment.sh [--overlay X] [--audio FILE.wav]
#          [--ingress-ip 127.0.0.1] [--host voice.local] [--disruption] [--timeout 600s]
#          [--dry-run] [--help]
set -euo pipefail
# shellcheck source=deploy/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

overlay="" audio="" ingress_ip=127.0.0.1 host=voice.local disruption=0 timeout=600s
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --overlay) [ $# -ge 2 ] || die "--overlay needs a value"; overlay="$2"; shift ;;
    --audio) [ $# -ge 2 ] || die "--audio needs a file"; audio="$2"; shift ;;
    --ingress-ip) [ $# -ge 2 ] || die "--ingress-ip needs a value"; ingress_ip="$2"; shift ;;
    --host) [ $# -ge 2 ] || die "--host needs a value"; host="$2"; shift ;;
    --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; timeout="$2"; shift ;;
    --disruption) disruption=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
export DRY_RUN
require_cmd kubectl "install kubectl (or k3s kubectl)"
require_cmd curl "install curl"
[ -z "$audio" ] || [ -f "$audio" ] || die "--audio $audio: no such file"

passed=0 failed=0
ok() {
  passed=$((passed + 1))
  if [ "$DRY_RUN" = 1 ]; then printf 'PLANNED (dry run, not checked) %s\n' "$*"; else printf 'PASS %s\n' "$*"; fi
}
bad() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }

# 1.
verify_args=()
[ -n "$overlay" ] && verify_args+=(--overlay "$overlay")
[ "$DRY_RUN" = 1 ] && verify_args+=(--dry-run)
if "$DEPLOY_DIR/scripts/verify-deployment.sh" "${verify_args[@]}"; then ok "verify-deployment.sh"; else bad "verify-deployment.sh (see above)"; fi

pf_pid=""
stop_pf() { if [ -n "$pf_pid" ]; then kill "$pf_pid" 2>/dev/null || true; wait "$pf_pid" 2>/dev/null || true; pf_pid=""; fi; }
work="$(mktemp -d -t voice-test.XXXXXX)"
trap 'stop_pf; rm -rf "$work"' EXIT
forward() { # service port -> local port (port + 20000), waits until /healthz answers
  local name="$1" port="$2" lp=$(($2 + 20000))
  print_cmd kubectl -n "$NAMESPACE" port-forward "svc/$name" "$lp:$port"
  [ "$DRY_RUN" = 1 ] && return 0
  kubectl -n "$NAMESPACE" port-forward "svc/$name" "$lp:$port" >/dev/null 2>&1 &
  pf_pid=$!
  for _ in $(seq 1 20); do
    curl -fsS "http://127.0.0.1:$lp/healthz" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}

# 2. APIs. The model services want `Authorization: Bearer <key>` (deploy/README.md, "API keys"):
# the key voice-agent sends, from the Secret its api-keys volume names (kustomize's hash suffix is
# part of the name). It goes into a private header file for `curl -H @file`: never on a command
# line, never printed.
auth="$work/authorization"
api_key_header() {
  local secret key
  local volume='jsonpath={.spec.template.spec.volumes[?(@.name=="api-keys")].secret.secretName}'
  local item='go-template={{index .data "agent-key"}}'
  print_cmd kubectl -n "$NAMESPACE" get deployment voice-agent -o "$volume"
  if [ "$DRY_RUN" = 1 ]; then
    print_cmd kubectl -n "$NAMESPACE" get secret 'voice-api-keys-<hash>' -o "$item"
    return 0
  fi
  secret="$(kubectl -n "$NAMESPACE" get deployment voice-agent -o "$volume" 2>/dev/null)" || secret=""
  [ -n "$secret" ] || return 1
  print_cmd kubectl -n "$NAMESPACE" get secret "$secret" -o "$item"
  key="$(kubectl -n "$NAMESPACE" get secret "$secret" -o "$item" 2>/dev/null | base64 -d 2>/dev/null | tr -d '[:space:]')" || key=""
  [ -n "$key" ] || return 1
  (umask 077 && printf 'Authorization: Bearer %s\n' "$key" >"$auth")
}
auth_args=()
if api_key_header; then
  auth_args=(-H "@$auth")
else
  warn "no API key found (voice-agent's api-keys volume / Secret voice-api-keys): calling the APIs without one"
fi
for svc in "${MODEL_SERVICES[@]}"; do
  name="voice-$svc"
  port="$(service_http_port "$name")"
  lp=$((port + 20000))
  if ! forward "$name" "$port"; then bad "$name: port-forward/healthz failed"; stop_pf; continue; fi
  [ "$svc" = agent ] && { stop_pf; continue; }   # the agent has no /v1/models
  print_cmd curl -fsS "${auth_args[@]}" "http://127.0.0.1:$lp/v1/models"
  models="$([ "$DRY_RUN" = 1 ] || curl -fsS "${auth_args[@]}" "http://127.0.0.1:$lp/v1/models" 2>/dev/null || true)"
  if [ "$DRY_RUN" = 1 ] || grep -q '"data"' <<<"$models"; then
    ok "$name GET /v1/models"
  else
    bad "$name GET /v1/models did not list models"
  fi
  if [ "$svc" = stt ] && [ -n "$audio" ]; then
    print_cmd curl -fsS "${auth_args[@]}" "http://127.0.0.1:$lp/v1/audio/transcriptions" -F "file=@$audio"
    if [ "$DRY_RUN" = 1 ]; then
      ok "voice-stt transcription (dry run)"
    elif text="$(curl -fsS "${auth_args[@]}" "http://127.0.0.1:$lp/v1/audio/transcriptions" -F "file=@$audio" 2>/dev/null)" \
      && grep -q '"text":"[^"]' <<<"$text"; then
      ok "voice-stt transcribed $audio: $text"
    else
      bad "voice-stt transcription of $audio failed: ${text:-no answer}"
    fi
  fi
  stop_pf
done

# 3. Pod security, as running.
print_cmd kubectl -n "$NAMESPACE" get pods -o 'jsonpath={range .items[*]}...{end}'
if [ "$DRY_RUN" != 1 ]; then
  insecure="$(kubectl -n "$NAMESPACE" get pods -o 'jsonpath={range .items[*]}{.metadata.name}{" "}{.spec.securityContext.runAsNonRoot}{" "}{.spec.containers[*].securityContext.readOnlyRootFilesystem}{"\n"}{end}' \
    | awk '$2 != "true" || $0 ~ /false/ {print $1}')"
  if [ -z "$insecure" ]; then ok "every pod: runAsNonRoot, read-only root filesystem"; else bad "pods breaking the security rules: $insecure"; fi
fi

# 4. Autoscaling.
if run kubectl -n "$NAMESPACE" get hpa voice-stt >/dev/null; then ok "HPA voice-stt present"; else bad "HPA voice-stt missing"; fi
if run kubectl get --raw "/apis/custom.metrics.k8s.io/v1beta1/namespaces/$NAMESPACE/pods/*/voice_stt_queue_depth" >/dev/null; then
  ok "custom metric voice_stt_queue_depth served"
else
  bad "custom metric voice_stt_queue_depth not served: is prometheus-adapter installed (deploy/install/install-k3s-gpu.sh)?"
fi

# 5. Ingress + TLS + security headers.
print_cmd curl -ksSI --resolve "$host:443:$ingress_ip" "https://$host/"
if [ "$DRY_RUN" = 1 ]; then
  ok "ingress (dry run)"
elif headers="$(curl -ksSI --resolve "$host:443:$ingress_ip" "https://$host/" 2>/dev/null)" \
  && grep -qi '^strict-transport-security:' <<<"$headers" && grep -qi '^x-content-type-options: nosniff' <<<"$headers"; then
  ok "https://$host/ answers with the security headers"
else
  bad "https://$host/ via $ingress_ip: no answer or security headers missing"
fi

# 6. Disruption.
if [ "$disruption" = 1 ]; then
  run kubectl -n "$NAMESPACE" delete pod -l app.kubernetes.io/name=voice-stt --wait=false
  if run kubectl -n "$NAMESPACE" wait --for=condition=Available deployment/voice-stt --timeout="$timeout" \
    && run kubectl -n "$NAMESPACE" rollout status deployment/voice-stt --timeout="$timeout"; then
    ok "voice-stt recovered after its pod was deleted"
  else
    diagnose deployment voice-stt
    bad "voice-stt did not recover within $timeout"
  fi
fi

if [ "$DRY_RUN" = 1 ]; then
  printf 'dry run: %s checks planned, none run\n' "$passed"
else
  printf '%s passed, %s failed\n' "$passed" "$failed"
fi
[ "$failed" -eq 0 ]
