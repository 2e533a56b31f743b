#!/usr/bin/env python3
"""onnxruntime on the registry Kokoro int8 ONNX, the same pieces (token ids) and voice as
`tts-bench`: time to first audio (first piece; the text front end is not counted, it gets our
phonemes for free) and real-time factor, per input.

    python benches/tts_peer.py --model-dir ~/.cache/voice-ai/models/kokoro-82m --plan plan.json --runs 3 --json peer.json
"""
import argparse, json, statistics, time, resource
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    d = Path(a.model_dir)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    sess = ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
    plan = json.load(open(a.plan))
    packs = {}
    rows = []
    # Warm-up, as ours.
    sess.run(None, {"tokens": np.array([[0, 50, 83, 54, 156, 0]], dtype=np.int64),
                    "style": np.zeros((1, 256), dtype=np.float32), "speed": np.array([1.0], dtype=np.float32)})
    for item in plan:
        v = item["voice"]
        if v not in packs:
            packs[v] = np.fromfile(d / "voices" / f"{v}.bin", dtype=np.float32).reshape(510, 256)
        ttfa, rtf, total = [], [], []
        for _ in range(a.runs):
            start = time.perf_counter()
            first, samples = None, 0
            for ids in item["pieces"]:
                style = packs[v][len(ids) - 3][None, :]
                audio = sess.run(["audio"], {"tokens": np.array([ids], dtype=np.int64), "style": style,
                                             "speed": np.array([1.0], dtype=np.float32)})[0]
                samples += audio.shape[-1]
                if first is None:
                    first = (time.perf_counter() - start) * 1e3
            t = (time.perf_counter() - start) * 1e3
            secs = samples / 24000
            ttfa.append(first); rtf.append(t / 1e3 / secs); total.append(t)
        row = dict(words=item["words"], pieces=len(item["pieces"]), audio_secs=secs, ttfa_ms=statistics.median(ttfa),
                   total_ms=statistics.median(total), rtf=statistics.median(rtf), ttfa_ms_runs=ttfa, rtf_runs=rtf,
                   rss_mb_peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, onnxruntime=ort.__version__)
        print(f"peer  {row['words']:>2} words, {row['pieces']} pieces, {secs:.1} s audio: first audio {row['ttfa_ms']:.0f} ms, "
              f"total {row['total_ms']:.0f} ms, RTF {row['rtf']:.3f}")
        rows.append(row)
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
