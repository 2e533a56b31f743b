#!/usr/bin/env bash
# Semantic end of turn, ours and the peer in one run on this machine:
#   voice-smart-turn (release build, turn-bench)  vs  onnxruntime (PyPI) running the same
#   smart-turn-v3.2-cpu.onnx with pipecat's own feature code, 2 threads each,
# on the labelled set turn-bench builds (LibriVox and JFK speech at real sentence ends and
# mid-sentence pauses, Kokoro speech finished and unfinished; each + 200 ms of silence).
# Prints accuracy per source (ours, onnxruntime, a fixed 200 ms silence) and the time per decision
# with the ratio ours/peer. Results also land in bench-results/.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"
ROUNDS="${ROUNDS:-3}"
RUNS="${RUNS:-3}"
out="$REPO_ROOT/bench-results"
mkdir -p "$out"
ensure_debian_packages libopenblas0-pthread espeak-ng pocketsphinx-testdata

log "building turn-bench (release)"
cargo build --release --locked -p voice-benches -p voice-models
"$CARGO_TARGET_DIR/release/voice-models" fetch smart-turn-v3 kokoro-82m jfk-sample >/dev/null
model="$VOICE_MODELS_DIR/smart-turn-v3/smart-turn-v3.2-cpu.onnx"
ensure_venv "$CACHE_ROOT/venv-turn-bench" benches/requirements-turn.txt
# pipecat's feature code, from the same wheel the model comes from (sha256 as in models/manifest.toml).
wheel_dir="$CACHE_ROOT/pipecat-ai-1.14.0"
if [ ! -f "$wheel_dir/pipecat/audio/turn/smart_turn/_whisper_features.py" ]; then
  mkdir -p "$wheel_dir"
  "$CACHE_ROOT/venv-turn-bench/bin/pip" download -q --no-deps pipecat-ai==1.14.0 -d "$wheel_dir"
  echo "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44  $wheel_dir/pipecat_ai-1.14.0-py3-none-any.whl" | sha256sum -c --quiet -
  (cd "$wheel_dir" && unzip -q -o pipecat_ai-1.14.0-py3-none-any.whl 'pipecat/audio/turn/smart_turn/*')
fi

set_dir="$out/turn-set"
"$CARGO_TARGET_DIR/release/turn-bench" --out "$set_dir" --build-only --rebuild
# Interleaved rounds so that drift in the machine's speed hits both sides alike.
rm -f "$out"/turn-ours-*.json "$out"/turn-peer-*.json
for r in $(seq 1 "$ROUNDS"); do
  log "round $r/$ROUNDS: ours (voice-smart-turn)"
  "$CARGO_TARGET_DIR/release/turn-bench" --out "$set_dir" --runs "$RUNS" --json "$out/turn-ours-$r.json" | tail -6
  log "round $r/$ROUNDS: peer (onnxruntime)"
  "$CACHE_ROOT/venv-turn-bench/bin/python" benches/turn_peer.py --set "$set_dir" --wheel-root "$wheel_dir" --model "$model" \
    --runs "$RUNS" --json "$out/turn-peer-$r.json"
done

"$CACHE_ROOT/venv-turn-bench/bin/python" - "$out" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
med = statistics.median
ours = [json.load(open(f"{out}/turn-ours-{r}.json")) for r in range(1, rounds + 1)]
peer = [json.load(open(f"{out}/turn-peer-{r}.json")) for r in range(1, rounds + 1)]
o, p = ours[0], peer[0]  # probabilities do not change between rounds
print(f"\n{len(o)} samples, {rounds} interleaved rounds; decision = complete when p > 0.5, after 200 ms of silence")
print(f"{'source':9} {'n':>3} {'complete':>8} {'ours':>10} {'onnxruntime':>12} {'fixed 200 ms':>13}  pauses waited through (ours / onnxruntime / fixed)")
summary = {"sources": {}}
for src in ["librivox", "jfk", "kokoro", "all"]:
    rows = [(a, b) for a, b in zip(o, p) if src == "all" or a["source"] == src]
    n = len(rows)
    comp = sum(a["complete"] for a, _ in rows)
    ro = sum((a["probability"] > 0.5) == a["complete"] for a, _ in rows)
    rp = sum((b["probability"] > 0.5) == b["complete"] for _, b in rows)
    wo = sum(not a["complete"] and a["probability"] <= 0.5 for a, _ in rows)
    wp = sum(not b["complete"] and b["probability"] <= 0.5 for _, b in rows)
    print(f"{src:9} {n:3} {comp:8} {ro:4} ({100*ro/n:3.0f} %) {rp:5} ({100*rp/n:3.0f} %) {comp:6} ({100*comp/n:3.0f} %)  {wo} / {wp} / 0 of {n - comp}")
    summary["sources"][src] = dict(samples=n, complete=comp, ours_right=ro, peer_right=rp, fixed_right=comp, ours_waited=wo, peer_waited=wp)
agree = sum((a["probability"] > 0.5) == (b["probability"] > 0.5) for a, b in zip(o, p))
dp = [abs(a["probability"] - b["probability"]) for a, b in zip(o, p)]
to = med(med(r["decision_ms"] for r in rr) for rr in ours)
tp = med(med(r["decision_ms"] for r in rr) for rr in peer)
print(f"same decision as onnxruntime on {agree}/{len(o)}; |dp| median {med(dp):.3f}, max {max(dp):.3f}")
print(f"time per decision (features + network, median over samples, median of rounds): ours {to:.1f} ms, onnxruntime {tp:.1f} ms, ratio {to/tp:.2f}")
summary.update(same_decision=agree, samples=len(o), dp_median=med(dp), dp_max=max(dp), ours_ms=to, peer_ms=tp, ratio=to / tp, peer=f"onnxruntime {p[0]['onnxruntime']}")
json.dump(summary, open(f"{out}/turn-summary.json", "w"), indent=1)
PY
