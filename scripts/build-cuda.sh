#!/usr/bin/env bash
# Build every binary with the `cuda` feature on a machine without a GPU (nvcc from PyPI wheels,
# see scripts/setup-cuda-toolkit.sh), so the GPU code paths keep compiling.
# Usage: scripts/build-cuda.sh [--release]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
ensure_rust
cargo fetch --locked
"$REPO_ROOT/scripts/setup-cuda-toolkit.sh" >/dev/null
# shellcheck disable=SC1091
source "${VOICE_CUDA_HOME:-$CACHE_ROOT/cuda-13.0}/env.sh"
log "cargo build --features cuda (kernels compile for sm_${CUDA_COMPUTE_CAP})"
cargo build --locked --workspace --all-targets "$@" \
  --features voice-runtime/cuda,voice-kernels/cuda,voice-whisper/cuda,voice-stt/cuda,voice-textgen/cuda,voice-llm/cuda,voice-embeddings/cuda,voice-embed/cuda,voice-kokoro/cuda,voice-tts/cuda,voice-benches/cuda
