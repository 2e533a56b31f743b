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

# Interleaved rounds (ours, then the peer, ROUNDS times) so that drift in the machine's speed
# hits both sides alike; each round transcribes the whole set once per model.
ROUNDS="${ROUNDS:-5}"
rm -f "$out"/stt-ours-*.json "$out"/stt-peer-*.json
for r in $(seq 1 "$ROUNDS"); do
  log "round $r/$ROUNDS: ours (voice-whisper)"
  "$CARGO_TARGET_DIR/release/stt-rtf" "${model_args[@]}" --runs 1 --json "$out/stt-ours-$r.json"
  log "round $r/$ROUNDS: peer (faster-whisper float32, int8)"
  "$CACHE_ROOT/venv-bench/bin/python" benches/stt_peer.py "${peer_args[@]}" --compute-type float32 --compute-type int8 \
    --jfk "$VOICE_MODELS_DIR/jfk-sample/jfk.wav" --runs 1 --json "$out/stt-peer-$r.json"
done

"$CACHE_ROOT/venv-bench/bin/python" - "$out" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for r in range(1, rounds + 1):
    ours = {o["model"]: o for o in json.load(open(f"{out}/stt-ours-{r}.json"))}
    for p in json.load(open(f"{out}/stt-peer-{r}.json")):
        o = ours[p["model"]]
        row = rows.setdefault((p["model"], p["compute_type"]), dict(ours=[], peer=[], ratio=[], o=o, p=p))
        row["ours"].append(o["rtf_median"]); row["peer"].append(p["rtf_median"])
        row["ratio"].append(o["rtf_median"] / p["rtf_median"])
print(f"\n{rounds} interleaved rounds; medians. RTF = processing time / audio time (lower is faster).")
print("model            peer type  ours RTF  peer RTF  ratio ours/peer (min..max)   WER ours / peer")
summary = []
for (m, ct), r in rows.items():
    med = statistics.median
    print(f"{m:<16} {ct:<9}  {med(r['ours']):.4f}    {med(r['peer']):.4f}    {med(r['ratio']):.2f} ({min(r['ratio']):.2f}..{max(r['ratio']):.2f})"
          f"          {100*r['o']['wer']:.1f}% / {100*r['p']['wer']:.1f}%")
    summary.append(dict(model=m, peer_compute_type=ct, ours_rtf=med(r["ours"]), peer_rtf=med(r["peer"]),
                        ratio=med(r["ratio"]), ratios=r["ratio"], ours_wer=r["o"]["wer"], peer_wer=r["p"]["wer"],
                        ours_rss_mb_after_load=r["o"]["rss_mb_after_load"], peer_versions=r["p"]["versions"]))
for (m, ct), r in rows.items():
    if ct == "float32":
        print(f"{m}: our resident memory with the model loaded {r['o']['rss_mb_after_load']:.0f} MB (peak {r['o']['rss_mb_peak']:.0f} MB)")
json.dump(summary, open(f"{out}/stt-summary.json", "w"), indent=1)
PY
