#!/usr/bin/env bash
# Fuzz every parser that takes outside input with cargo-fuzz (libFuzzer), FUZZ_SECONDS each
# (default 60), and print executions per target. Targets: fuzz/fuzz_targets/*.rs (functions in
# fuzz/src/lib.rs). A crash fails the run; its input is copied to fuzz/regressions/<target>/ so
# that, once fixed, `cargo test` in fuzz/ replays it forever (commit it with the fix).
#
# Usage: scripts/fuzz.sh [target...]     Env: FUZZ_SECONDS, FUZZ_RESULTS (JSON lines file),
#   FUZZ_SEED (default 1: the same inputs in the same order, from the seeds make_seeds.py writes, so a CI run
#   is a prefix of a longer local run), FUZZ_KEEP_CORPUS=1 (grow a corpus across runs in the cache,
#   with a random seed: for exploring, not for CI).
# Tools: cargo-fuzz 0.13.2 (pinned) installed into ~/.cache/voice-ai/tools. libFuzzer needs
# rustc's -Z flags: RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them (no nightly here).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT/fuzz"
python3 make_seeds.py > /dev/null

CARGO_FUZZ_VERSION=0.13.2
TOOLS=$CACHE_ROOT/tools
SECONDS_EACH=${FUZZ_SECONDS:-60}
RESULTS=${FUZZ_RESULTS:-$CACHE_ROOT/fuzz-results.jsonl}
if [[ ${FUZZ_KEEP_CORPUS:-0} == 1 ]]; then
  WORK=$CACHE_ROOT/fuzz-work
  SEED=${FUZZ_SEED:-0}
else
  WORK=$(mktemp -d /tmp/voice-fuzz.XXXXXX)
  trap 'rm -rf "$WORK"' EXIT
  SEED=${FUZZ_SEED:-1}
fi
export CARGO_TARGET_DIR=$CACHE_ROOT/fuzz-target
export PATH=$TOOLS/bin:$PATH
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
  CARGO_TARGET_DIR=$CACHE_ROOT/tools-build cargo install --locked --quiet --version "$CARGO_FUZZ_VERSION" --root "$TOOLS" cargo-fuzz
fi

targets=("$@")
if [[ ${#targets[@]} == 0 ]]; then
  mapfile -t targets < <(cargo fuzz list)
fi

log "building ${#targets[@]} fuzz targets (instrumented, $CARGO_TARGET_DIR)"
cargo fuzz build --dev --sanitizer none --features libfuzzer
: > "$RESULTS"
failed=0
for t in "${targets[@]}"; do
  # The working corpus grows across runs (outside the clone); the generated seeds start it.
  mkdir -p "$WORK/$t/corpus" "$WORK/$t/artifacts"
  # Every crash found before (fixed since) must run clean in the libFuzzer binary too.
  if compgen -G "regressions/$t/*" > /dev/null; then
    cargo fuzz run --dev --sanitizer none --features libfuzzer "$t" "regressions/$t" -- -runs=0 > "$WORK/$t/regressions.log" 2>&1 || {
      log "$t: a regression input crashes again"; tail -n 40 "$WORK/$t/regressions.log" >&2; failed=1; }
  fi
  log "fuzzing $t for ${SECONDS_EACH}s"
  status=0
  cargo fuzz run --dev --sanitizer none --features libfuzzer "$t" "$WORK/$t/corpus" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -seed="$SEED" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$WORK/$t/artifacts/" > "$WORK/$t/log" 2>&1 || status=$?
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$WORK/$t/log" | grep -oE '[0-9]+$' || echo 0)
  corpus=$(find "$WORK/$t/corpus" -type f | wc -l)
  crashes=$(find "$WORK/$t/artifacts" -type f | wc -l)
  if [[ $status != 0 || $crashes != 0 ]]; then
    failed=1
    mkdir -p "regressions/$t"
    cp "$WORK/$t/artifacts/"* "regressions/$t/" 2>/dev/null || true
    log "$t: CRASH (exit $status); inputs copied to fuzz/regressions/$t/; log tail:"
    grep -v '^#[0-9]' "$WORK/$t/log" | tail -n 40 >&2
    rm -f "$WORK/$t/artifacts/"*
  fi
  printf '{"target":"%s","seconds":%s,"executions":%s,"corpus":%s,"crashes":%s,"exit":%s}\n' \
    "$t" "$SECONDS_EACH" "${execs:-0}" "$corpus" "$crashes" "$status" | tee -a "$RESULTS"
done
[[ $failed == 0 ]] || { log "fuzzing found crashes"; exit 1; }
log "fuzzing: no crash in ${#targets[@]} targets"
