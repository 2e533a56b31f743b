#!/usr/bin/env bash
# Move a running voice-ai stack to the CPU (the GPU failed, or it is needed elsewhere): applies
# the cpu overlay (--device cpu, CUDA-free images, no nvidia.com/gpu, more CPU and memory),
# waits for every model service to roll over (maxUnavailable 0: the old pods serve until the
# new ones are ready) and verifies they now report the CPU.
#
# Usage: deploy/scripts/switch-to-cpu.sh [--dry-run] [--timeout 900s] [--skip-verify] [--help]
# Back to the GPU: deploy/scripts/deploy-gpu.sh --overlay gpu
set -euo pipefail
# shellcheck source=deploy/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

timeout=900s verify=1
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; timeout="$2"; shift ;;
    --skip-verify) verify=0 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
export DRY_RUN
require_cmd kubectl "install kubectl (or k3s kubectl)"

run kubectl cluster-info >/dev/null || die "no cluster reachable with kubectl"
run kubectl get namespace "$NAMESPACE" >/dev/null \
  || die "namespace $NAMESPACE not found: nothing to switch (deploy with deploy/scripts/deploy-gpu.sh --overlay cpu)"

work="$(mktemp -d -t voice-cpu.XXXXXX)"
trap 'rm -rf "$work"' EXIT
print_cmd kubectl kustomize "$DEPLOY_DIR/overlays/cpu"
kubectl kustomize "$DEPLOY_DIR/overlays/cpu" >"$work/rendered.yaml" || die "rendering deploy/overlays/cpu failed"

# The fetch Job is immutable and its models are already on the volume: leave it out.
run kubectl apply -f "$work/rendered.yaml" --selector 'app.kubernetes.io/name!=voice-models-fetch' \
  || die "kubectl apply of the cpu overlay failed"

for svc in "${MODEL_SERVICES[@]}"; do
  d="voice-$svc"
  log "rollout to CPU: $d"
  if ! run kubectl -n "$NAMESPACE" rollout status "deployment/$d" --timeout="$timeout"; then
    diagnose deployment "$d"
    die "$d did not become ready on the CPU within $timeout (too little CPU or memory? kubectl describe nodes)"
  fi
done

if [ "$verify" = 1 ]; then
  verify_args=(--overlay cpu)
  [ "$DRY_RUN" = 1 ] && verify_args+=(--dry-run)
  "$DEPLOY_DIR/scripts/verify-deployment.sh" "${verify_args[@]}" || die "verification after the switch failed"
fi
log "voice-ai now runs on the CPU. Back to the GPU: deploy/scripts/deploy-gpu.sh --overlay gpu"
