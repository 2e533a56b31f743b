#!/usr/bin/env bash
# Text-to-speech benchmark, ours and the peer in one run on this machine:
#   voice-kokoro + voice-g2p (release build, tts-bench)  vs  onnxruntime (PyPI) on the same
#   registry int8 ONNX, the same token ids (our front end's pieces) and voice, 2 threads each.
# Prints time to first audio and real-time factor for 10-, 25- and 50-word inputs and the ratio
# ours/peer. Results also land in bench-results/.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"
ROUNDS="${ROUNDS:-3}"
RUNS="${RUNS:-3}"
out="$REPO_ROOT/bench-results"
mkdir -p "$out"
ensure_debian_packages libopenblas0-pthread espeak-ng

log "building tts-bench (release)"
cargo build --release --locked -p voice-benches -p voice-models
"$CARGO_TARGET_DIR/release/voice-models" fetch kokoro-82m >/dev/null
dir="$VOICE_MODELS_DIR/kokoro-82m"
ensure_venv "$CACHE_ROOT/venv-bench" benches/requirements.txt

# Interleaved rounds so that drift in the machine's speed hits both sides alike.
rm -f "$out"/tts-ours-*.json "$out"/tts-peer-*.json
for r in $(seq 1 "$ROUNDS"); do
  log "round $r/$ROUNDS: ours (voice-kokoro)"
  "$CARGO_TARGET_DIR/release/tts-bench" --model-dir "$dir" --runs "$RUNS" --plan "$out/tts-plan.json" --json "$out/tts-ours-$r.json"
  log "round $r/$ROUNDS: peer (onnxruntime)"
  "$CACHE_ROOT/venv-bench/bin/python" benches/tts_peer.py --model-dir "$dir" --plan "$out/tts-plan.json" --runs "$RUNS" --json "$out/tts-peer-$r.json"
done

"$CACHE_ROOT/venv-bench/bin/python" - "$out" "$ROUNDS" "$RUNS" <<'PY'
import json, statistics, sys
out, rounds, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = {}
for r in range(1, rounds + 1):
    for o, p in zip(json.load(open(f"{out}/tts-ours-{r}.json")), json.load(open(f"{out}/tts-peer-{r}.json"))):
        row = rows.setdefault(o["words"], dict(o_rtf=[], p_rtf=[], o_ttfa=[], p_ttfa=[], o_whole=[], o_gap=[], o=o, p=p))
        row["o_rtf"].append(o["rtf"]); row["p_rtf"].append(p["rtf"])
        row["o_whole"].append(o["ttfa_whole_ms"]); row["o_gap"].append(o["gap_ms"])
        row["o_ttfa"].append(o["ttfa_ms"]); row["p_ttfa"].append(p["ttfa_ms"])
med = statistics.median
print(f"\n{rounds} interleaved rounds of {runs} runs each; medians. RTF = synthesis time / audio time (lower is faster).")
print("First audio: ours streamed inside the first piece (as voice-tts serves it) and with the piece in one pass;")
print("the peer synthesizes the piece in one pass. Gaps: waits a real-time listener hears after the first audio (ours).")
print("words  audio s  RTF ours  RTF peer  ratio   first audio ours (front end)  ours whole  peer   ratio  gaps")
summary = []
for w, r in sorted(rows.items()):
    rr = med(r["o_rtf"]) / med(r["p_rtf"]); tr = med(r["o_ttfa"]) / med(r["p_ttfa"])
    print(f"{w:>5}  {r['o']['audio_secs']:7.1f}  {med(r['o_rtf']):8.3f}  {med(r['p_rtf']):8.3f}  {rr:5.2f}   "
          f"{med(r['o_ttfa']):7.0f} ms ({r['o']['g2p_ms']:.0f} ms)         {med(r['o_whole']):6.0f} ms  {med(r['p_ttfa']):5.0f} ms  {tr:5.2f}  {med(r['o_gap']):4.0f} ms")
    summary.append(dict(words=w, audio_secs=r["o"]["audio_secs"], ours_rtf=med(r["o_rtf"]), peer_rtf=med(r["p_rtf"]),
                        rtf_ratio=rr, ours_ttfa_ms=med(r["o_ttfa"]), ours_ttfa_whole_ms=med(r["o_whole"]), ours_gap_ms=med(r["o_gap"]), peer_ttfa_ms=med(r["p_ttfa"]), ttfa_ratio=tr,
                        ours_rss_mb_peak=r["o"]["rss_mb_peak"], peer_rss_mb_peak=r["p"]["rss_mb_peak"],
                        peer=f"onnxruntime {r['p']['onnxruntime']}"))
print(f"peak resident memory: ours {summary[-1]['ours_rss_mb_peak']:.0f} MB, peer {summary[-1]['peer_rss_mb_peak']:.0f} MB")
json.dump(summary, open(f"{out}/tts-summary.json", "w"), indent=1)
PY
