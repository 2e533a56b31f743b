#!/usr/bin/env bash
# Speech-to-text benchmark, ours and the peer in one run on this machine:
#   voice-whisper (release build, stt-rtf)  vs  faster-whisper / CTranslate2 (PyPI), same
#   model.bin files, same audio (JFK + LibriVox, 35.7 s, 93 words), greedy, English.
# Prints each side's real-time factor (processing time / audio time; lower is faster), WER, and
# the ratio ours/theirs against CTranslate2 float32 and int8. Results also land in bench-results/.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"
RUNS="${RUNS:-3}"
read -r -a MODELS <<< "${MODELS:-whisper-tiny.en whisper-base}"
out="$REPO_ROOT/bench-results"
mkdir -p "$out"
ensure_debian_packages pocketsphinx-testdata libopenblas0-pthread

log "building stt-rtf (release)"
cargo build --release --locked -p voice-benches -p voice-models
"$CARGO_TARGET_DIR/release/voice-models" fetch "${MODELS[@]}" jfk-sample >/dev/null

ensure_venv "$CACHE_ROOT/venv-bench" benches/requirements.txt
peer_args=()
for m in "${MODELS[@]}"; do peer_args+=(--model-dir "$m=$VOICE_MODELS_DIR/$m"); done
model_args=()
for m in "${MODELS[@]}"; do model_args+=(--model "$m"); done

log "ours: voice-whisper"
"$CARGO_TARGET_DIR/release/stt-rtf" "${model_args[@]}" --runs "$RUNS" --json "$out/stt-ours.json"
log "peer: faster-whisper (float32, int8)"
"$CACHE_ROOT/venv-bench/bin/python" benches/stt_peer.py "${peer_args[@]}" --compute-type float32 --compute-type int8 \
  --jfk "$VOICE_MODELS_DIR/jfk-sample/jfk.wav" --runs "$RUNS" --json "$out/stt-peer.json"

"$CACHE_ROOT/venv-bench/bin/python" - "$out/stt-ours.json" "$out/stt-peer.json" <<'PY'
import json, sys
ours = {r["model"]: r for r in json.load(open(sys.argv[1]))}
peer = json.load(open(sys.argv[2]))
print("\nmodel            ours RTF   peer RTF (type)     ratio ours/peer   WER ours / peer")
for p in peer:
    o = ours.get(p["model"])
    if not o:
        continue
    print(f"{p['model']:<16} {o['rtf_median']:.4f}     {p['rtf_median']:.4f} ({p['compute_type']:<7})  "
          f"{o['rtf_median']/p['rtf_median']:.2f}              {100*o['wer']:.1f}% / {100*p['wer']:.1f}%")
for o in ours.values():
    print(f"{o['model']}: resident memory with the model loaded {o['rss_mb_after_load']:.0f} MB (peak {o['rss_mb_peak']:.0f} MB)")
PY
