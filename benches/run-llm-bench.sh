#!/usr/bin/env bash
# LLM benchmark, ours and the peer in one run on this machine:
#   voice-textgen (release build, llm-bench: the engine voice-llm serves with)  vs  llama.cpp
#   (llama-cpp-python, same GGUF file, same thread count), SmolLM2-135M-Instruct Q4_1.
# Prints prompt (prefill) and decode tokens/s for each side and the ratios ours/theirs (higher is
# better for us), then our aggregate decode tokens/s at 1, 4 and 8 concurrent streams (llama.cpp's
# Python binding serves one sequence, so that figure is ours alone). Results land in bench-results/.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"
MODEL="${MODEL:-smollm2-135m-instruct}"
THREADS="${THREADS:-$(nproc)}"
ROUNDS="${ROUNDS:-5}"
out="$REPO_ROOT/bench-results"
mkdir -p "$out"

log "building llm-bench (release)"
cargo build --release --locked -p voice-benches -p voice-models
"$CARGO_TARGET_DIR/release/voice-models" fetch "$MODEL" >/dev/null
ensure_venv "$CACHE_ROOT/venv-bench" benches/requirements.txt

# Interleaved rounds so that drift in the machine's speed hits both sides alike.
rm -f "$out"/llm-ours-*.json "$out"/llm-peer-*.json
for r in $(seq 1 "$ROUNDS"); do
  log "round $r/$ROUNDS: ours (voice-textgen)"
  RAYON_NUM_THREADS="$THREADS" "$CARGO_TARGET_DIR/release/llm-bench" --model "$MODEL" --runs 1 --json "$out/llm-ours-$r.json"
  log "round $r/$ROUNDS: peer (llama.cpp)"
  "$CACHE_ROOT/venv-bench/bin/python" benches/llm_peer.py --gguf "$VOICE_MODELS_DIR/$MODEL/model.gguf" \
    --threads "$THREADS" --runs 1 --json "$out/llm-peer-$r.json"
done

"$CACHE_ROOT/venv-bench/bin/python" - "$out" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
med = statistics.median
ours = [json.load(open(f"{out}/llm-ours-{r}.json")) for r in range(1, rounds + 1)]
peer = [json.load(open(f"{out}/llm-peer-{r}.json")) for r in range(1, rounds + 1)]
print(f"\n{ours[0]['model']}, {ours[0]['threads']} threads, {rounds} interleaved rounds; medians (min..max of per-round ratios)")
summary = dict(model=ours[0]["model"], threads=ours[0]["threads"], peer=peer[0]["peer"], rounds=rounds)
for key, label in [("prefill_tok_s", f"prompt ({ours[0]['prompt_tokens']} tokens)"), ("decode_tok_s", f"decode ({ours[0]['gen_tokens']} tokens)")]:
    o, p = [x[key] for x in ours], [x[key] for x in peer]
    ratios = [a / b for a, b in zip(o, p)]
    print(f"{label:<22} ours {med(o):6.1f} tok/s   llama.cpp {med(p):6.1f} tok/s   ratio ours/theirs {med(ratios):.2f} ({min(ratios):.2f}..{max(ratios):.2f})")
    summary[key] = dict(ours=med(o), peer=med(p), ratio=med(ratios), ratios=ratios)
streams = [s for s, _ in ours[0]["aggregate"]]
agg = {s: med([dict(x["aggregate"])[s] for x in ours]) for s in streams}
print("aggregate decode (ours): " + ", ".join(f"{s} streams {t:.0f} tok/s" for s, t in agg.items()))
summary["aggregate_tok_s"] = agg
json.dump(summary, open(f"{out}/llm-summary.json", "w"), indent=1)
PY
