#!/usr/bin/env bash
# Detect the GPU, CPU and memory of this machine and recommend a deployment overlay.
#
# Usage: deploy/install/detect-hardware.sh [--dry-run] [--help]
#
# Prints KEY=VALUE lines on stdout (eval-able), the reasoning on stderr:
#   GPU_COUNT GPU_NAME GPU_MEMORY_MIB GPU_DRIVER CPU_CORES MEMORY_GIB OVERLAY REASON
# Overlay rule (see KUBERNETES_DEPLOYMENT_GUIDE.md):
#   a GPU with >= 30000 MiB (32 GB class: the seed's 22 GB of budgets + 10 GB reserve) -> gpu
#   a GPU with >= 12000 MiB (Whisper 4 + Kokoro 3 + agent 2 + embed 1 = 10 GB)        -> hybrid
#   no usable GPU (no nvidia-smi, or it fails: driver not loaded)                      -> cpu
# Detection only reads (nvidia-smi, nproc, /proc/meminfo), so --dry-run runs it too.
set -euo pipefail
# shellcheck source=deploy/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

GPU_MIN_MIB=30000
HYBRID_MIN_MIB=12000
# CPU and memory requests of each overlay (sum of the manifests' requests; tests/k8s checks them).
declare -A NEED_CORES=([gpu]=14 [hybrid]=16 [cpu]=20)
declare -A NEED_GIB=([gpu]=38 [hybrid]=42 [cpu]=49)

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

gpu_count=0 gpu_name="" gpu_mib=0 gpu_driver="" reason=""
if ! command -v nvidia-smi >/dev/null 2>&1; then
  reason="nvidia-smi not found (no NVIDIA driver installed)"
else
  query=(nvidia-smi "--query-gpu=name,memory.total,driver_version" "--format=csv,noheader,nounits")
  print_cmd "${query[@]}"
  if out="$("${query[@]}" 2>/dev/null)" && [ -n "$out" ]; then
    while IFS=, read -r name mib driver; do
      name="$(echo "$name" | sed 's/^ *//;s/ *$//')"
      mib="$(echo "$mib" | tr -dc '0-9')"
      driver="$(echo "$driver" | tr -d ' ')"
      [ -n "$mib" ] || continue
      gpu_count=$((gpu_count + 1))
      if [ "$mib" -gt "$gpu_mib" ]; then
        gpu_mib="$mib" gpu_name="$name" gpu_driver="$driver"
      fi
    done <<<"$out"
    [ "$gpu_count" -gt 0 ] || reason="nvidia-smi listed no GPU"
  else
    reason="nvidia-smi failed (driver not loaded or GPU unreachable)"
    warn "$reason: deploying for the CPU"
  fi
fi

if [ "$gpu_count" -gt 0 ] && [ "$gpu_mib" -ge "$GPU_MIN_MIB" ]; then
  overlay=gpu
  reason="$gpu_name with $gpu_mib MiB: every model service on the GPU (22 GB of budgets)"
elif [ "$gpu_count" -gt 0 ] && [ "$gpu_mib" -ge "$HYBRID_MIN_MIB" ]; then
  overlay=hybrid
  reason="$gpu_name with $gpu_mib MiB (< $GPU_MIN_MIB): STT, TTS, embeddings, agent on the GPU, LLM on the CPU"
elif [ "$gpu_count" -gt 0 ]; then
  overlay=cpu
  reason="$gpu_name with $gpu_mib MiB is below $HYBRID_MIN_MIB MiB: CPU mode"
else
  overlay=cpu
fi

cores="$(run_local nproc)"
mem_kib="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)"
mem_gib=$((mem_kib / 1024 / 1024))
if [ "$cores" -lt "${NEED_CORES[$overlay]}" ] || [ "$mem_gib" -lt "${NEED_GIB[$overlay]}" ]; then
  warn "the $overlay overlay requests ${NEED_CORES[$overlay]} CPU cores and ${NEED_GIB[$overlay]} GiB;" \
    "this machine has $cores cores and $mem_gib GiB: some pods will stay Pending (lower the requests in an overlay of your own)"
fi

log "recommended overlay: $overlay ($reason)"
printf 'GPU_COUNT=%s\n' "$gpu_count"
printf 'GPU_NAME=%q\n' "$gpu_name"
printf 'GPU_MEMORY_MIB=%s\n' "$gpu_mib"
printf 'GPU_DRIVER=%q\n' "$gpu_driver"
printf 'CPU_CORES=%s\n' "$cores"
printf 'MEMORY_GIB=%s\n' "$mem_gib"
printf 'OVERLAY=%s\n' "$overlay"
printf 'REASON=%q\n' "$reason"
