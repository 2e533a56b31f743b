# shellcheck shell=bash
# shellcheck disable=SC2034  # variables used by the scripts that source this file
# Shared by deploy/install/*.sh and deploy/scripts/*.sh (sourced, not run).
#
# --dry-run contract: every command is printed ("+ cmd" on stderr) before it runs. Under
# --dry-run, commands that change or query the cluster or the host (`run`) are printed and NOT
# run; only local, read-only steps (`run_local`: hardware detection, rendering manifests with
# `kubectl kustomize`) still run, so the printed plan is the real one.

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_ROOT="$(cd "$DEPLOY_DIR/.." && pwd)"
NAMESPACE="${VOICE_NAMESPACE:-voice-ai}"
DRY_RUN="${DRY_RUN:-0}"

# Deployments in the order they are rolled out and checked: LiveKit first (the agent joins it),
# the model services, the agent that calls them, then the web app.
ROLLOUT_ORDER=(voice-livekit voice-stt voice-llm voice-embed voice-tts voice-agent voice-frontend)
MODEL_SERVICES=(stt llm embed tts agent)
OVERLAYS=(gpu cpu hybrid full)

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}

# Print a command as "+ cmd args" (shell-quoted only where needed), on stderr.
print_cmd() {
  local out="+" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then out+=" $a"; else out+=" $(printf '%q' "$a")"; fi
  done
  printf '%s\n' "$out" >&2
}

# A command that changes or asks the cluster/host: printed, skipped under --dry-run.
run() {
  print_cmd "$@"
  if [ "$DRY_RUN" = 1 ]; then return 0; fi
  "$@"
}

# A local read-only command: printed, always run.
run_local() {
  print_cmd "$@"
  "$@"
}

require_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH: $2"
}

valid_overlay() {
  local o
  for o in "${OVERLAYS[@]}"; do [ "$o" = "$1" ] && return 0; done
  return 1
}

# HTTP port of a service (voice-<svc>): the ports the manifests give them.
service_http_port() {
  case "$1" in
    voice-stt) echo 8001 ;;
    voice-llm) echo 8002 ;;
    voice-embed) echo 8003 ;;
    voice-tts) echo 8004 ;;
    voice-agent) echo 8005 ;;
    voice-frontend) echo 3000 ;;
    voice-livekit) echo 7880 ;;
    *) return 1 ;;
  esac
}

# Services an overlay puts on the GPU (comma-separated short names), as in its voice-ai-mode ConfigMap.
overlay_gpu_services() {
  case "$1" in
    gpu | full) echo "stt,llm,embed,tts,agent" ;;
    hybrid) echo "stt,embed,tts,agent" ;;
    cpu) echo "" ;;
    *) return 1 ;;
  esac
}

# Print what is known about a failed workload, for the error message that follows.
diagnose() {
  local kind="$1" name="$2"
  warn "diagnostics for $kind/$name:"
  run kubectl -n "$NAMESPACE" describe "$kind" "$name" >&2 || true
  run kubectl -n "$NAMESPACE" get pods -l "app.kubernetes.io/name=$name" -o wide >&2 || true
  run kubectl -n "$NAMESPACE" logs "$kind/$name" --all-containers --tail=50 >&2 || true
  run kubectl -n "$NAMESPACE" get events --sort-by=.lastTimestamp >&2 || true
}
