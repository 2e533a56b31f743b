#!/usr/bin/env bash
# Check every crate with the `cuda` feature on a machine without a GPU (nvcc from PyPI wheels,
# see scripts/setup-cuda-toolkit.sh), so the GPU code paths keep compiling.
#
# `cargo check` by default: it type-checks all our CUDA code paths and runs candle's build
# scripts, so every .cu kernel is compiled to PTX by nvcc. What only a full build (--build) adds is
# codegen and the link against cudart/cublas/curand and the libcuda stub: a CUDA symbol missing
# from those libraries shows only there (and post-monomorphisation errors, which our code does
# not provoke). That costs a second full build of the tree, so CI checks; run --build before a
# GPU run (the binaries it leaves are CUDA-linked).
# Usage: scripts/build-cuda.sh [--build [--release]]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
ensure_rust
mode=check
if [ "${1:-}" = --build ]; then mode=build; shift; fi
cargo fetch --locked
"$REPO_ROOT/scripts/setup-cuda-toolkit.sh" >/dev/null
# shellcheck disable=SC1091
source "${VOICE_CUDA_HOME:-$CACHE_ROOT/cuda-13.0}/env.sh"
log "cargo $mode --features cuda (kernels compile for sm_${CUDA_COMPUTE_CAP})"
cargo "$mode" --locked --workspace --all-targets "$@" \
  --features voice-runtime/cuda,voice-kernels/cuda,voice-whisper/cuda,voice-stt/cuda,voice-textgen/cuda,voice-llm/cuda,voice-embeddings/cuda,voice-embed/cuda,voice-kokoro/cuda,voice-tts/cuda,voice-vad/cuda,voice-smart-turn/cuda,voice-benches/cuda
[ "$mode" = build ] || exit 0

# Executables, unlike libraries, are written to the same file whatever the features, so a CPU
# test run in the same target dir would find these CUDA-linked binaries fresh and reuse them
# (they need libcuda.so.1 to start). Remove them; the next CPU build relinks its own.
profile=debug
for arg in "$@"; do [ "$arg" = --release ] && profile=release; done
for bin in voice-stt voice-llm voice-embed voice-tts voice-agent voice-models stt-rtf llm-bench embed-bench tts-bench; do
  rm -f "$CARGO_TARGET_DIR/$profile/$bin"
  find "$CARGO_TARGET_DIR/$profile/deps" -maxdepth 1 -type f -name "${bin//-/_}-*" ! -name '*.d' -delete 2>/dev/null || true
done
