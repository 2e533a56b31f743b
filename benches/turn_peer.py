#!/usr/bin/env python3
"""Smart Turn as pipecat runs it (`LocalSmartTurnAnalyzerV3._predict_endpoint`: last 8 s, zeros
in front, pipecat's `_whisper_features.py`, onnxruntime on smart-turn-v3.2-cpu.onnx) on the
labelled set `turn-bench` wrote: probability and time per decision (features + session run),
the median of `--runs`.

    python benches/turn_peer.py --set bench-results/turn-set --wheel-root /tmp/pipecat \
        --model ~/.cache/voice-ai/models/smart-turn-v3/smart-turn-v3.2-cpu.onnx --json peer.json
"""
import argparse, json, statistics, sys, time, wave
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", required=True)
    ap.add_argument("--wheel-root", required=True, help="the unpacked pipecat-ai 1.14.0 wheel")
    ap.add_argument("--model", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    sys.path.insert(0, str(Path(a.wheel_root) / "pipecat/audio/turn/smart_turn"))
    from _whisper_features import compute_whisper_log_mel_features

    so = ort.SessionOptions()
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    so.intra_op_num_threads = a.threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(a.model, so)

    def decide(audio):
        x = audio[-128000:]
        x = np.pad(x, (128000 - len(x), 0))
        feats = compute_whisper_log_mel_features(x, do_normalize=True)
        return float(sess.run(None, {"input_features": feats[None]})[0][0, 0])

    set_dir = Path(a.set)
    rows = []
    for s in json.load(open(set_dir / "labels.json")):
        with wave.open(str(set_dir / "samples" / f"{s['name']}.wav")) as w:
            audio = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
        decide(audio) if not rows else None  # warm-up
        times, p = [], 0.0
        for _ in range(a.runs):
            t = time.perf_counter()
            p = decide(audio)
            times.append((time.perf_counter() - t) * 1e3)
        rows.append(dict(s, probability=p, decision_ms=statistics.median(times), onnxruntime=ort.__version__))
    right = sum((r["probability"] > 0.5) == r["complete"] for r in rows)
    print(f"peer (onnxruntime {ort.__version__}, {a.threads} threads): {right}/{len(rows)} right, "
          f"median decision {statistics.median(r['decision_ms'] for r in rows):.1f} ms")
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
