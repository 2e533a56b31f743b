#!/usr/bin/env bash
# Install a pinned CUDA 13.0 toolkit (nvcc, headers, nvvm, cudart, cublas, curand, nvrtc)
# from PyPI wheels into a cache directory outside the repo, so that candle's CUDA code
# (`cargo build --features cuda`) can be built on a machine WITHOUT a GPU or driver.
#
# This automates the recipe in docs/CUDA.md (shared docs):
#   1. pip-install the pinned wheels (no deps) -> <cache>/site/nvidia/cu13/{bin,include,lib,nvvm}
#   2. create unversioned lib symlinks (libcudart.so, libcublas.so, ...) in cu13/lib
#   3. build a LINK-ONLY stub libcuda.so (soname libcuda.so.1) into cu13/lib/stubs from the
#      cu* symbols cudarc 0.19.10 declares (the real driver library is used at run time)
#   4. write <cache>/env.sh exporting CUDA_HOME/CUDA_PATH/CUDA_ROOT/NVCC/PATH/... for cargo
#
# Idempotent: a stamp file records the pinned versions; when it matches and the toolkit is
# present, the script only prints the environment. Downloaded wheels are kept in
# <cache>/wheels, so a reinstall (--force, or after deleting <cache>/site) needs no network.
#
# Usage: scripts/setup-cuda-toolkit.sh [--dry-run] [--force] [--help]
#        then: source "<cache>/env.sh" && cargo build --release --features cuda
set -euo pipefail

# ---------------------------------------------------------------------------- pins
# CUDA 13.0 exactly: newer nvvm emits PTX the GPU machines' driver rejects, and
# cudarc 0.19.10 refuses toolkits newer than 13.4.
PINS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.1.0.3
  nvidia-curand==10.4.0.35
  nvidia-cuda-nvrtc==13.0.88
)
CUDARC_VERSION=0.19.10
CUDA_COMPUTE_CAP_VALUE=90     # H100/H200 (sm_90)
CUDARC_CUDA_VERSION_VALUE=13000
UNVERSIONED_LIBS=(libcudart libcublas libcublasLt libcurand libnvrtc)
STAMP_FORMAT=1                # bump when the on-disk layout produced by this script changes

# ---------------------------------------------------------------------------- paths
CACHE_ROOT="${VOICE_CUDA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/voice-ai/cuda-13.0}"
SITE="$CACHE_ROOT/site"
CU="$SITE/nvidia/cu13"
WHEELS="$CACHE_ROOT/wheels"
ENV_SH="$CACHE_ROOT/env.sh"
STAMP="$CACHE_ROOT/.installed"
LOCK="$CACHE_ROOT/.lock"
CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PYTHON="${PYTHON:-python3}"

DRY_RUN=0
FORCE=0
STAGE=""

usage() {
  cat <<EOF
Usage: $(basename "$0") [--dry-run] [--force] [--help]

Installs the pinned CUDA 13.0 toolkit wheels from PyPI (~1.2 GB download) into
  $CACHE_ROOT
(override with VOICE_CUDA_HOME, or XDG_CACHE_HOME), builds a link-only libcuda.so stub,
and writes an env file to source before 'cargo build --features cuda':
  $ENV_SH

Options:
  --dry-run   print every command that would be run, run nothing, write nothing
  --force     reinstall even if the stamp says the toolkit is up to date
              (reuses the wheels already downloaded to $WHEELS)
  -h, --help  show this help

Environment:
  VOICE_CUDA_HOME  install root (default \${XDG_CACHE_HOME:-\$HOME/.cache}/voice-ai/cuda-13.0)
  CARGO_HOME       where cudarc-$CUDARC_VERSION sources are looked up (default ~/.cargo)
  PYTHON           python interpreter used to run pip (default python3)

Requires: python3 with pip, gcc. The cudarc sources must be in the cargo registry
(run 'cargo fetch' in the repo first).
EOF
}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a command, or only print it (shell-quoted) under --dry-run.
run() {
  if (( DRY_RUN )); then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# Write stdin to a file (atomically), or print what would be written under --dry-run.
write_file() {
  local dest="$1" content
  content="$(cat)"
  if (( DRY_RUN )); then
    printf '+ cat > %q <<'"'"'EOF'"'"'\n%s\nEOF\n' "$dest" "$content"
  else
    printf '%s\n' "$content" >"$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
  fi
}

cleanup() {
  if [[ -n "$STAGE" && -d "$STAGE" ]]; then
    rm -rf "$STAGE"
  fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------- args
while (($#)); do
  case "$1" in
    --dry-run|-n) DRY_RUN=1 ;;
    --force|-f) FORCE=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

stamp_content() {
  printf 'format=%s\n' "$STAMP_FORMAT"
  printf 'cudarc=%s\n' "$CUDARC_VERSION"
  printf '%s\n' "${PINS[@]}"
}

is_up_to_date() {
  [[ -f "$STAMP" && -f "$ENV_SH" ]] || return 1
  [[ "$(cat "$STAMP")" == "$(stamp_content)" ]] || return 1
  [[ -x "$CU/bin/nvcc" && -f "$CU/lib/stubs/libcuda.so" && -d "$CU/nvvm" && -d "$CU/include" ]] || return 1
  local lib
  for lib in "${UNVERSIONED_LIBS[@]}"; do
    [[ -e "$CU/lib/$lib.so" ]] || return 1
  done
}

print_env() {
  printf '\nCUDA toolkit: %s\n' "$CU"
  if (( DRY_RUN )); then
    printf '+ bash -c %q\n' "source $ENV_SH && nvcc --version"
  else
    printf 'nvcc --version:\n'
    # shellcheck disable=SC1090
    (source "$ENV_SH" && nvcc --version)
  fi
  printf '\nenv file (use: source %q):\n%s\n' "$ENV_SH" "$ENV_SH"
}

# ---------------------------------------------------------------------------- fast path
if (( !FORCE )) && is_up_to_date; then
  log "CUDA 13.0 toolkit already installed and up to date (stamp: $STAMP)"
  print_env
  exit 0
fi

# ---------------------------------------------------------------------------- prerequisites
command -v "$PYTHON" >/dev/null 2>&1 \
  || die "'$PYTHON' not found: install Python 3 (e.g. apt-get install -y python3 python3-pip)"
"$PYTHON" -m pip --version >/dev/null 2>&1 \
  || die "pip is not available for '$PYTHON': install it (e.g. apt-get install -y python3-pip, or '$PYTHON -m ensurepip')"
command -v gcc >/dev/null 2>&1 \
  || die "gcc not found: it is needed to build the libcuda.so stub and by nvcc as host compiler (apt-get install -y build-essential)"
command -v g++ >/dev/null 2>&1 \
  || log "warning: g++ not found; nvcc needs a host C++ compiler to build the candle kernels (apt-get install -y g++)"

shopt -s nullglob
CUDARC_SYS=("$CARGO_HOME_DIR"/registry/src/*/"cudarc-$CUDARC_VERSION"/src/driver/sys/mod.rs)
shopt -u nullglob
if ((${#CUDARC_SYS[@]} == 0)); then
  die "cudarc-$CUDARC_VERSION sources not found under $CARGO_HOME_DIR/registry/src/*/ (needed for the libcuda.so stub symbol list).
       Run 'cargo fetch' in the repo first:  (cd '$REPO_ROOT' && cargo fetch)  then re-run this script."
fi
if [[ -f "$REPO_ROOT/Cargo.lock" ]] && grep -q '^name = "cudarc"' "$REPO_ROOT/Cargo.lock" \
   && ! grep -A1 '^name = "cudarc"' "$REPO_ROOT/Cargo.lock" | grep -q "^version = \"$CUDARC_VERSION\""; then
  log "warning: Cargo.lock does not pin cudarc $CUDARC_VERSION; the stub symbol list may not match"
fi

# ---------------------------------------------------------------------------- lock
run mkdir -p "$CACHE_ROOT" "$WHEELS"
if (( !DRY_RUN )) && command -v flock >/dev/null 2>&1; then
  exec 9>"$LOCK"
  flock -n 9 || { log "another setup-cuda-toolkit.sh run holds $LOCK; waiting"; flock 9; }
  # The other run may just have finished the job.
  if (( !FORCE )) && is_up_to_date; then
    log "CUDA 13.0 toolkit already installed and up to date (stamp: $STAMP)"
    print_env
    exit 0
  fi
fi

# ---------------------------------------------------------------------------- 1. wheels
# Download only wheels not already in $WHEELS (the wheels dir IS the cache, so pip's own
# HTTP cache is disabled to avoid keeping 1.2 GB twice).
missing=()
for pin in "${PINS[@]}"; do
  name="${pin%%==*}"
  ver="${pin##*==}"
  shopt -s nullglob
  found=("$WHEELS/${name//-/_}-$ver-"*.whl)
  shopt -u nullglob
  ((${#found[@]})) || missing+=("$pin")
done
if ((${#missing[@]})); then
  log "downloading ${#missing[@]} wheel(s) into $WHEELS (CUDA 13.0 is ~1.2 GB in total)"
  run "$PYTHON" -m pip download --no-deps --no-cache-dir --progress-bar off \
    --dest "$WHEELS" "${missing[@]}"
else
  log "all ${#PINS[@]} wheels already downloaded in $WHEELS"
fi

# Install into a fresh staging dir: 'pip install --target' refuses to merge into an existing
# nvidia/ directory, and a staging dir keeps a failed run from leaving a half-installed tree.
STAGE_PATH="$CACHE_ROOT/site.tmp.$$"
(( DRY_RUN )) || STAGE="$STAGE_PATH"
SCU="$STAGE_PATH/nvidia/cu13"
log "installing wheels into $STAGE_PATH"
run "$PYTHON" -m pip install --no-deps --no-index --find-links "$WHEELS" --no-compile \
  --no-warn-script-location --disable-pip-version-check --target "$STAGE_PATH" "${PINS[@]}"

if (( !DRY_RUN )); then
  for d in bin include lib nvvm; do
    [[ -d "$SCU/$d" ]] || die "unexpected wheel layout: $SCU/$d missing (found: $(find "$STAGE_PATH/nvidia" -mindepth 1 -maxdepth 2 -type d 2>/dev/null | tr '\n' ' '))"
  done
  [[ -x "$SCU/bin/nvcc" ]] || die "nvcc not found at $SCU/bin/nvcc after install"
fi

# ---------------------------------------------------------------------------- 2. symlinks
log "creating unversioned library symlinks in cu13/lib"
for lib in "${UNVERSIONED_LIBS[@]}"; do
  if (( DRY_RUN )); then
    printf '+ ln -sfn %q %q   # newest %s.so.<N> shipped by the wheel\n' \
      "$lib.so.<N>" "$SCU/lib/$lib.so" "$lib"
    continue
  fi
  shopt -s nullglob
  candidates=("$SCU/lib/$lib.so."*)
  shopt -u nullglob
  ((${#candidates[@]})) || die "no $lib.so.* found in $SCU/lib"
  # Shortest name = the soname-level file (libcudart.so.13 rather than libcudart.so.13.0.96).
  target="$(for c in "${candidates[@]}"; do basename "$c"; done | awk '{print length, $0}' | sort -n | head -n1 | cut -d' ' -f2-)"
  run ln -sfn "$target" "$SCU/lib/$lib.so"
done

# ---------------------------------------------------------------------------- 3. libcuda stub
log "building link-only libcuda.so stub (soname libcuda.so.1) from cudarc-$CUDARC_VERSION symbols"
run mkdir -p "$SCU/lib/stubs"
gen_stub_source() {
  grep -ohE 'pub unsafe fn cu[A-Za-z0-9_]+' "${CUDARC_SYS[@]}" \
    | awk '{print $4}' | sort -u | sed 's/.*/int &(void){return 100;}/'
}
if (( DRY_RUN )); then
  printf "+ grep -ohE 'pub unsafe fn cu[A-Za-z0-9_]+' %s | awk '{print \$4}' | sort -u | sed 's/.*/int &(void){return 100;}/' > %q\n" \
    "$(printf '%q ' "${CUDARC_SYS[@]}")" "$SCU/lib/stubs/libcuda_stub.c"
else
  gen_stub_source >"$SCU/lib/stubs/libcuda_stub.c"
  nsyms="$(wc -l <"$SCU/lib/stubs/libcuda_stub.c")"
  ((nsyms > 100)) || die "only $nsyms cu* functions found in ${CUDARC_SYS[*]}; cudarc sources look wrong"
  log "stub exports $nsyms cu* functions"
fi
run gcc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$SCU/lib/stubs/libcuda.so" "$SCU/lib/stubs/libcuda_stub.c"
run ln -sfn libcuda.so "$SCU/lib/stubs/libcuda.so.1"

# ---------------------------------------------------------------------------- sanity check
log "checking that nvcc runs"
run "$SCU/bin/nvcc" --version

# ---------------------------------------------------------------------------- swap into place
if [[ -e "$SITE" || -L "$SITE" ]]; then
  run rm -rf "$SITE"
fi
run mv "$STAGE_PATH" "$SITE"
STAGE=""

# ---------------------------------------------------------------------------- 4. env.sh
log "writing $ENV_SH"
printf -v q_cu '%q' "$CU"
write_file "$ENV_SH" <<EOF
# Generated by scripts/setup-cuda-toolkit.sh -- CUDA 13.0 toolkit from PyPI wheels.
# Source before building candle's CUDA code:  source $ENV_SH
# libcuda.so in lib/stubs is a LINK-ONLY stub: it is on LIBRARY_PATH (link time) but
# deliberately NOT on LD_LIBRARY_PATH, so the real driver library is used at run time.
_voice_cu=$q_cu
export CUDA_HOME="\$_voice_cu"
export CUDA_PATH="\$_voice_cu"
export CUDA_ROOT="\$_voice_cu"
export NVCC="\$_voice_cu/bin/nvcc"
case ":\${PATH:-}:" in
  *":\$_voice_cu/bin:"*) ;;
  *) export PATH="\$_voice_cu/bin\${PATH:+:\$PATH}" ;;
esac
case ":\${LIBRARY_PATH:-}:" in
  *":\$_voice_cu/lib:\$_voice_cu/lib/stubs:"*) ;;
  *) export LIBRARY_PATH="\$_voice_cu/lib:\$_voice_cu/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}" ;;
esac
case ":\${LD_LIBRARY_PATH:-}:" in
  *":\$_voice_cu/lib:"*) ;;
  *) export LD_LIBRARY_PATH="\$_voice_cu/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" ;;
esac
export CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP_VALUE
export CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION_VALUE
CUDAFORGE_THREADS="\${CUDAFORGE_THREADS:-\$(nproc)}"
export CUDAFORGE_THREADS
unset _voice_cu
EOF

# ---------------------------------------------------------------------------- stamp
stamp_content | write_file "$STAMP"
log "done"
print_env
