#!/usr/bin/env bash
# Build the voice-ai images (CPU and CUDA variants of each service binary, voice-models for the
# fetch Job, the frontend) with deploy/docker/Dockerfile{,.frontend}, and optionally import them
# into K3s's containerd (no registry needed on a single node).
#
# Usage: deploy/docker/build-images.sh [--variant cpu|cuda|all] [--tag 0.1.0] [--import-k3s]
#          [--cuda-compute-cap 120] [--dry-run] [--help]
# Binaries whose package is not in the workspace yet are skipped with a note.
set -euo pipefail
# shellcheck source=deploy/scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

variant=all tag=0.1.0 import=0 cap=120
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) [ $# -ge 2 ] || die "--variant needs a value"; variant="$2"; shift ;;
    --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag="$2"; shift ;;
    --cuda-compute-cap) [ $# -ge 2 ] || die "--cuda-compute-cap needs a value"; cap="$2"; shift ;;
    --import-k3s) import=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
case "$variant" in cpu | cuda | all) ;; *) die "--variant must be cpu, cuda or all" ;; esac
require_cmd docker "install Docker with BuildKit (docker buildx)"
[ "$import" = 0 ] || require_cmd k3s "--import-k3s needs k3s on this machine"

in_workspace() { grep -rqs --include=Cargo.toml "^name = \"$1\"" "$REPO_ROOT/crates" "$REPO_ROOT/services"; }
built=()
build() { # image-name dockerfile build-args...
  local image="$1" file="$2"
  shift 2
  run docker build -f "$file" "$@" -t "$image" "$REPO_ROOT" || die "docker build of $image failed"
  built+=("$image")
}

for bin in voice-stt voice-llm voice-embed voice-tts voice-agent voice-models; do
  if ! in_workspace "$bin"; then
    warn "$bin: no such package in the workspace yet, skipped"
    continue
  fi
  if [ "$variant" != cuda ] || [ "$bin" = voice-models ]; then
    build "voice-ai/$bin:$tag" "$DEPLOY_DIR/docker/Dockerfile" --build-arg "BIN=$bin"
  fi
  if [ "$variant" != cpu ] && [ "$bin" != voice-models ]; then
    build "voice-ai/$bin:$tag-cuda" "$DEPLOY_DIR/docker/Dockerfile" --build-arg "BIN=$bin" \
      --build-arg "FEATURES=$bin/cuda" --build-arg "CUDA_COMPUTE_CAP=$cap" \
      --build-arg "RUNTIME_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04"
  fi
done
if [ -f "$REPO_ROOT/frontend/package.json" ]; then
  build "voice-ai/voice-frontend:$tag" "$DEPLOY_DIR/docker/Dockerfile.frontend"
else
  warn "frontend/package.json not found: voice-frontend image skipped"
fi

if [ "$import" = 1 ]; then
  for image in "${built[@]}"; do
    print_cmd docker save "$image" "|" k3s ctr images import -
    if [ "$DRY_RUN" != 1 ]; then
      docker save "$image" | k3s ctr images import - || die "import of $image into K3s failed"
    fi
  done
fi
log "built: ${built[*]:-nothing}"
