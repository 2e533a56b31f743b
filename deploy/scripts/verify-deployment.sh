#!/usr/bin/env bash
# Check a running voice-ai deployment: namespace security, default-deny policy, every
# Deployment available, and each model service's /readyz (ready, on the device the overlay
# asks for, not degraded) and /metrics, through `kubectl port-forward` (which needs no
# NetworkPolicy hole).
#
# Usage: deploy/scripts/verify-deployment.sh [--overlay gpu|cpu|hybrid|full] [--dry-run] [--help]
#   --overlay   default: read from the voice-ai-mode ConfigMap the overlay installed
# Exit status 0 when every check passes, 1 otherwise (each failure says what to look at).
set -euo pipefail
# shellcheck source=deploy/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

overlay=""
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --overlay) [ $# -ge 2 ] || die "--overlay needs a value"; overlay="$2"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
require_cmd kubectl "install kubectl (or k3s kubectl)"
require_cmd curl "install curl"

passed=0 failed=0
ok() {
  passed=$((passed + 1))
  if [ "$DRY_RUN" = 1 ]; then printf 'PLANNED (dry run, not checked) %s\n' "$*"; else printf 'PASS %s\n' "$*"; fi
}
bad() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }

# kubectl query: printed; under --dry-run not run (prints the expected value instead).
query() {
  local expect="$1"
  shift
  print_cmd "$@"
  if [ "$DRY_RUN" = 1 ]; then echo "$expect"; return 0; fi
  "$@" 2>/dev/null
}

if [ -z "$overlay" ]; then
  overlay="$(query gpu kubectl -n "$NAMESPACE" get configmap voice-ai-mode -o 'jsonpath={.data.overlay}')" \
    || die "no voice-ai-mode ConfigMap in $NAMESPACE: is voice-ai deployed? (or pass --overlay)"
fi
valid_overlay "$overlay" || die "unknown overlay '$overlay'"
gpu_services="$(overlay_gpu_services "$overlay")"
log "verifying overlay $overlay (GPU services: ${gpu_services:-none})"

# Namespace and policies.
enforce="$(query restricted kubectl get namespace "$NAMESPACE" -o 'jsonpath={.metadata.labels.pod-security\.kubernetes\.io/enforce}' || true)"
if [ "$enforce" = restricted ]; then
  ok "namespace $NAMESPACE enforces Pod Security restricted"
else
  bad "namespace $NAMESPACE: pod-security enforce label is '$enforce', want restricted"
fi
if query default-deny-all kubectl -n "$NAMESPACE" get networkpolicy default-deny-all -o name >/dev/null; then
  ok "default-deny NetworkPolicy present"
else
  bad "NetworkPolicy default-deny-all missing in $NAMESPACE"
fi

# Deployments.
for d in "${ROLLOUT_ORDER[@]}"; do
  avail="$(query 1 kubectl -n "$NAMESPACE" get deployment "$d" -o 'jsonpath={.status.availableReplicas}' || true)"
  if [ "${avail:-0}" -ge 1 ] 2>/dev/null; then ok "$d available ($avail)"; else bad "$d has no available replica: kubectl -n $NAMESPACE describe deployment $d"; fi
done

# Model services: /readyz and /metrics through a port-forward.
pf_pid=""
cleanup() { if [ -n "$pf_pid" ]; then kill "$pf_pid" 2>/dev/null || true; wait "$pf_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
for svc in "${MODEL_SERVICES[@]}"; do
  name="voice-$svc"
  port="$(service_http_port "$name")"
  local_port=$((port + 10000))
  print_cmd kubectl -n "$NAMESPACE" port-forward "svc/$name" "$local_port:$port"
  print_cmd curl -fsS "http://127.0.0.1:$local_port/readyz"
  print_cmd curl -fsS "http://127.0.0.1:$local_port/metrics"
  [ "$DRY_RUN" = 1 ] && continue
  kubectl -n "$NAMESPACE" port-forward "svc/$name" "$local_port:$port" >/dev/null 2>&1 &
  pf_pid=$!
  body=""
  for _ in $(seq 1 20); do
    body="$(curl -fsS "http://127.0.0.1:$local_port/readyz" 2>/dev/null)" && break
    body=""
    sleep 0.5
  done
  if [ -z "$body" ]; then
    bad "$name: /readyz not answering 200 (kubectl -n $NAMESPACE logs deployment/$name)"
  else
    device="$(sed -n 's/.*"device":"\([^"]*\)".*/\1/p' <<<"$body")"
    case ",$gpu_services," in
      *",$svc,"*) want=cuda ;;
      *) want=cpu ;;
    esac
    if [ "${device%%:*}" = "$want" ]; then
      ok "$name ready on $device"
    elif [ "$want" = cuda ]; then
      bad "$name runs on '${device:-?}' but the $overlay overlay puts it on the GPU: CPU fallback (check nvidia.com/gpu on the node, the GPU operator, and kubectl -n $NAMESPACE logs deployment/$name)"
    else
      bad "$name runs on '${device:-?}', expected cpu"
    fi
    if grep -q '"degraded":true' <<<"$body"; then
      bad "$name is degraded (a CUDA error moved it to the CPU): kubectl -n $NAMESPACE rollout restart deployment/$name"
    fi
    metric="voice_${svc}_ready"
    metrics="$(curl -fsS "http://127.0.0.1:$local_port/metrics" 2>/dev/null || true)"
    if grep -Eq "^${metric}(\{[^}]*\})? 1(\.0)?$" <<<"$metrics"; then
      ok "$name /metrics reports $metric 1"
    else
      bad "$name /metrics lacks '$metric 1'"
    fi
  fi
  cleanup
  pf_pid=""
done

if [ "$DRY_RUN" = 1 ]; then
  printf 'dry run: %s checks planned, none run\n' "$passed"
else
  printf '%s passed, %s failed\n' "$passed" "$failed"
fi
[ "$failed" -eq 0 ]
