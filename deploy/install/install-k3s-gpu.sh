#!/usr/bin/env bash
# Install a single-node K3s for voice-ai, with the NVIDIA GPU operator when a GPU is present,
# and the monitoring stack (kube-prometheus-stack + prometheus-adapter).
#
# Usage: sudo deploy/install/install-k3s-gpu.sh [--dry-run] [--cpu-only] [--skip-monitoring]
#                                               [--k3s-version vX.Y.Z+k3s1] [--help]
#
#   --dry-run          print every command, change nothing (hardware detection still runs)
#   --cpu-only         no GPU operator even if a GPU is found
#   --skip-monitoring  no kube-prometheus-stack / prometheus-adapter
#   --k3s-version      K3s release (default: K3S_VERSION in deploy/platform/versions.env)
#
# Needs: root, curl, helm (https://helm.sh/docs/intro/install/), and for the GPU the NVIDIA
# driver already installed on the host (nvidia-smi works). Next step: deploy/scripts/deploy-gpu.sh
set -euo pipefail
# shellcheck source=deploy/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
# shellcheck source=deploy/platform/versions.env
source "$DEPLOY_DIR/platform/versions.env"

cpu_only=0 monitoring=1 k3s_version="$K3S_VERSION"
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --cpu-only) cpu_only=1 ;;
    --skip-monitoring) monitoring=0 ;;
    --k3s-version)
      [ $# -ge 2 ] || die "--k3s-version needs a value"
      k3s_version="$2"
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
export DRY_RUN

if [ "$DRY_RUN" != 1 ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo $0 $*): K3s installs a system service"
fi
require_cmd curl "install curl (apt-get install -y curl)"
require_cmd helm "install Helm 3: https://helm.sh/docs/intro/install/"

# 1. Hardware.
hw="$("$DEPLOY_DIR/install/detect-hardware.sh")" || die "hardware detection failed"
gpu_count="$(sed -n 's/^GPU_COUNT=//p' <<<"$hw")"
gpu=0
if [ "$cpu_only" = 0 ] && [ "${gpu_count:-0}" -gt 0 ]; then gpu=1; fi
log "GPU operator: $([ "$gpu" = 1 ] && echo yes || echo no) (GPUs found: ${gpu_count:-0}, --cpu-only: $cpu_only)"

# 2. K3s (Traefik, ServiceLB and local-path are K3s defaults and the manifests use all three).
export KUBECONFIG="${KUBECONFIG:-/etc/rancher/k3s/k3s.yaml}"
if command -v k3s >/dev/null 2>&1; then
  log "K3s already installed: $(k3s --version 2>/dev/null | head -n1) (not reinstalling)"
else
  installer="$(mktemp -t k3s-install.XXXXXX)"
  trap 'rm -f "$installer"' EXIT
  run curl -sfL https://get.k3s.io -o "$installer"
  run env INSTALL_K3S_VERSION="$k3s_version" sh "$installer" --write-kubeconfig-mode 0600
fi
run kubectl wait --for=condition=Ready node --all --timeout=300s \
  || die "the K3s node did not become Ready in 5 minutes: journalctl -u k3s"

# 3. NVIDIA GPU operator: device plugin with time-slicing, container toolkit for K3s's
#    containerd, RuntimeClass nvidia, DCGM exporter.
if [ "$gpu" = 1 ]; then
  print_cmd nvidia-smi
  nvidia-smi >/dev/null 2>&1 || die "nvidia-smi fails: install and load the NVIDIA driver on the host first"
  run kubectl apply -k "$DEPLOY_DIR/platform/gpu-operator"
  run helm repo add nvidia "$NVIDIA_HELM_REPO" --force-update
  run helm repo update nvidia
  run helm upgrade --install gpu-operator nvidia/gpu-operator --namespace gpu-operator \
    --version "$GPU_OPERATOR_CHART_VERSION" -f "$DEPLOY_DIR/platform/helm/gpu-operator-values.yaml" \
    --wait --timeout 15m || die "GPU operator install failed: kubectl -n gpu-operator get pods"
  log "waiting for the node to advertise nvidia.com/gpu (time-sliced replicas)"
  gpus=""
  for _ in $(seq 1 60); do
    [ "$DRY_RUN" = 1 ] && break
    gpus="$(kubectl get nodes -o jsonpath='{.items[*].status.allocatable.nvidia\.com/gpu}' 2>/dev/null || true)"
    [ -n "$gpus" ] && [ "$gpus" != 0 ] && break
    sleep 10
  done
  print_cmd kubectl get nodes -o 'jsonpath={.items[*].status.allocatable.nvidia\.com/gpu}'
  if [ "$DRY_RUN" != 1 ] && { [ -z "$gpus" ] || [ "$gpus" = 0 ]; }; then
    die "no nvidia.com/gpu on the node after 10 minutes: kubectl -n gpu-operator get pods; if pods say 'no runtime for nvidia', systemctl restart k3s"
  fi
fi

# 4. Monitoring: Prometheus operator CRDs (ServiceMonitor, PrometheusRule), Grafana on :30030,
#    and prometheus-adapter for the HPAs' queue-depth metric.
if [ "$monitoring" = 1 ]; then
  run helm repo add prometheus-community "$PROMETHEUS_COMMUNITY_HELM_REPO" --force-update
  run helm repo update prometheus-community
  run helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
    --namespace monitoring --create-namespace --version "$KUBE_PROMETHEUS_STACK_CHART_VERSION" \
    -f "$DEPLOY_DIR/platform/helm/kube-prometheus-stack-values.yaml" --wait --timeout 15m \
    || die "kube-prometheus-stack install failed: kubectl -n monitoring get pods"
  run helm upgrade --install prometheus-adapter prometheus-community/prometheus-adapter \
    --namespace monitoring --version "$PROMETHEUS_ADAPTER_CHART_VERSION" \
    -f "$DEPLOY_DIR/platform/helm/prometheus-adapter-values.yaml" --wait --timeout 10m \
    || die "prometheus-adapter install failed: kubectl -n monitoring get pods"
fi

log "K3s is ready. Next: deploy/scripts/deploy-gpu.sh$([ "$DRY_RUN" = 1 ] && echo ' --dry-run')"
