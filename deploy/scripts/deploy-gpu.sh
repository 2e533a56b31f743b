#!/usr/bin/env bash
# One-command deployment of voice-ai on a K3s cluster (deploy/install/install-k3s-gpu.sh sets
# one up). Picks the overlay from the hardware unless told, renders it, makes sure the TLS
# Secret exists, fetches the models, rolls everything out in order and verifies it.
#
# Usage: deploy/scripts/deploy-gpu.sh [--overlay gpu|cpu|hybrid|full] [--dry-run]
#          [--timeout 900s] [--fetch-timeout 3600s] [--host voice.local]
#          [--tls-cert FILE --tls-key FILE] [--skip-verify] [--help]
#
#   --overlay        default: what deploy/install/detect-hardware.sh recommends
#   --timeout        per Deployment rollout (model loading included)
#   --fetch-timeout  for the voice-models-fetch Job
#   --host           host name of the self-signed certificate made when voice-ai-tls is absent
#   --tls-cert/-key  use this certificate instead
#   --dry-run        print every command; only detection and rendering run
#
# LiveKit keys: the base ships DEVELOPMENT values (deploy/base/livekit/livekit-keys.dev.env).
# Real ones:  key=$(openssl rand -hex 8); secret=$(openssl rand -hex 32), written into that
# file (or a private overlay's secretGenerator) before deploying; see KUBERNETES_DEPLOYMENT_GUIDE.md.
# API keys: DEVELOPMENT values too (deploy/base/api-keys/keys.dev.txt: the bearer keys voice-stt,
# -llm, -embed and -tts accept; agent-key.dev.txt: the one voice-agent sends). Real ones:
# openssl rand -hex 32, written into those files before deploying; see deploy/README.md, "API keys".
set -euo pipefail
# shellcheck source=deploy/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

overlay="" timeout=900s fetch_timeout=3600s host=voice.local tls_cert="" tls_key="" verify=1
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
need_value() { [ "$2" -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --overlay) need_value "$1" $#; overlay="$2"; shift ;;
    --timeout) need_value "$1" $#; timeout="$2"; shift ;;
    --fetch-timeout) need_value "$1" $#; fetch_timeout="$2"; shift ;;
    --host) need_value "$1" $#; host="$2"; shift ;;
    --tls-cert) need_value "$1" $#; tls_cert="$2"; shift ;;
    --tls-key) need_value "$1" $#; tls_key="$2"; shift ;;
    --skip-verify) verify=0 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
export DRY_RUN
if { [ -n "$tls_cert" ] && [ -z "$tls_key" ]; } || { [ -z "$tls_cert" ] && [ -n "$tls_key" ]; }; then
  die "--tls-cert and --tls-key go together"
fi
require_cmd kubectl "install kubectl, or use the one K3s ships (k3s kubectl)"

# 1. Which overlay.
if [ -z "$overlay" ]; then
  hw="$("$DEPLOY_DIR/install/detect-hardware.sh")" || die "hardware detection failed"
  overlay="$(sed -n 's/^OVERLAY=//p' <<<"$hw")"
  log "overlay from hardware detection: $overlay"
fi
valid_overlay "$overlay" || die "unknown overlay '$overlay' (one of: ${OVERLAYS[*]})"

# 2. The cluster, and a GPU when the overlay wants one.
run kubectl cluster-info >/dev/null \
  || die "no cluster reachable with kubectl (KUBECONFIG=${KUBECONFIG:-~/.kube/config}): run deploy/install/install-k3s-gpu.sh"
if [ "$overlay" != cpu ] && [ "$DRY_RUN" != 1 ]; then
  print_cmd kubectl get nodes -o 'jsonpath={.items[*].status.allocatable.nvidia\.com/gpu}'
  gpus="$(kubectl get nodes -o 'jsonpath={.items[*].status.allocatable.nvidia\.com/gpu}')" || gpus=""
  if [ -z "${gpus// /}" ] || [ "${gpus// /}" = 0 ]; then
    die "overlay '$overlay' needs nvidia.com/gpu but no node advertises it: install the GPU operator (deploy/install/install-k3s-gpu.sh) or deploy with --overlay cpu"
  fi
fi

# 3. Render.
work="$(mktemp -d -t voice-deploy.XXXXXX)"
trap 'rm -rf "$work"' EXIT
print_cmd kubectl kustomize "$DEPLOY_DIR/overlays/$overlay"
kubectl kustomize "$DEPLOY_DIR/overlays/$overlay" >"$work/rendered.yaml" \
  || die "kubectl kustomize deploy/overlays/$overlay failed (run deploy/validate.sh)"

# 4. Namespace first, then the TLS Secret the IngressRoute names.
run kubectl apply -f "$DEPLOY_DIR/base/namespace.yaml"
if [ "$DRY_RUN" != 1 ] && print_cmd kubectl -n "$NAMESPACE" get secret voice-ai-tls \
  && kubectl -n "$NAMESPACE" get secret voice-ai-tls >/dev/null 2>&1; then
  log "TLS Secret voice-ai-tls exists (kept)"
else
  if [ -z "$tls_cert" ]; then
    require_cmd openssl "install openssl, or pass --tls-cert/--tls-key"
    tls_cert="$work/tls.crt" tls_key="$work/tls.key"
    run openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=$host" \
      -addext "subjectAltName=DNS:$host" -keyout "$tls_key" -out "$tls_cert"
    warn "self-signed certificate for $host: browsers will warn; pass --tls-cert/--tls-key for a real one"
  fi
  run kubectl -n "$NAMESPACE" create secret tls voice-ai-tls --cert="$tls_cert" --key="$tls_key"
fi

# 5. Apply. The fetch Job's pod template is immutable: replace the previous Job.
run kubectl -n "$NAMESPACE" delete job voice-models-fetch --ignore-not-found
run kubectl apply -f "$work/rendered.yaml" || die "kubectl apply failed"

# 6. Models, then the rollouts in dependency order.
log "waiting for the model fetch (voice-models-fetch, up to $fetch_timeout)"
if ! run kubectl -n "$NAMESPACE" wait --for=condition=complete job/voice-models-fetch --timeout="$fetch_timeout"; then
  diagnose job voice-models-fetch
  die "the model fetch did not complete within $fetch_timeout (see the logs above)"
fi
order=("${ROLLOUT_ORDER[@]}")
if [ "$overlay" = full ]; then
  run kubectl -n "$NAMESPACE" rollout status statefulset/voice-pgvector --timeout="$timeout" \
    || { diagnose statefulset voice-pgvector; die "voice-pgvector did not become ready within $timeout"; }
  for w in deployment/loki daemonset/fluent-bit; do
    run kubectl -n voice-ai-logging rollout status "$w" --timeout="$timeout" \
      || { NAMESPACE=voice-ai-logging diagnose "${w%/*}" "${w#*/}"; die "$w (voice-ai-logging) did not become ready within $timeout"; }
  done
fi
for d in "${order[@]}"; do
  log "rollout: $d"
  if ! run kubectl -n "$NAMESPACE" rollout status "deployment/$d" --timeout="$timeout"; then
    diagnose deployment "$d"
    die "$d did not become ready within $timeout (see above). Undo with: kubectl -n $NAMESPACE rollout undo deployment/$d"
  fi
done

# 7. Verify.
if [ "$verify" = 1 ]; then
  verify_args=(--overlay "$overlay")
  [ "$DRY_RUN" = 1 ] && verify_args+=(--dry-run)
  "$DEPLOY_DIR/scripts/verify-deployment.sh" "${verify_args[@]}" || die "verification failed"
fi
log "voice-ai deployed ($overlay). Open https://$host/ (point $host at this node in /etc/hosts); Grafana: http://<node>:30030"
