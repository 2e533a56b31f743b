#!/usr/bin/env python3
"""Reference features and probabilities for crates/smart-turn/tests/golden.rs.

Runs the reference code of the `pipecat-ai==1.14.0` wheel (its `_whisper_features.py`, imported
from the unpacked wheel) and onnxruntime on `smart-turn-v3.2-cpu.onnx`, the way
`LocalSmartTurnAnalyzerV3._predict_endpoint` does (last 8 s, zeros in front, features, session
run), on real and synthesized utterances:

- LibriVox (Debian pocketsphinx-testdata, 16 kHz): each of the 5 utterances whole, and cut
  mid-sentence, each followed by 300 ms of silence;
- JFK (jfk-sample, 11 s: longer than the window): whole, and cut after "my fellow Americans";
- Kokoro speech (crates/kokoro/tests/data/golden-{hello,fox}.wav, 24 kHz), resampled here with
  soxr to the 16 kHz files committed beside this script, whole and cut;
- signals: digital silence, a 440 Hz tone, deterministic noise (the LCG below, also in the test).

Two onnxruntime sessions: `ort` with the default optimisations (what pipecat runs: fused int8
kernels, QLinearSoftmax with its lookup table) and `graph` with all optimisations off (each
QuantizeLinear/DequantizeLinear evaluated as the graph states it: the semantics our port follows).

Per case it also stores `p_ort_band`, the range of onnxruntime's probability over 16 draws of
N(0, 1e-5) noise added to the features: near its boundary this quantized classifier is chaotic
(one uint8 activation level flipped early changes every later one), so that band is how far any
correct port, with features equal to ~1e-5, can land from `p_ort`.

Per case it stores the probabilities and, to check the features without storing 64,000 values,
every 128th feature value (row-major 80 x 800) plus their mean and minimum.

Usage (any machine with the packages; the test reads only the JSON and the WAVs):
  python -m venv /tmp/st-venv && /tmp/st-venv/bin/pip install onnxruntime==1.32.0 numpy soxr
  pip download --no-deps pipecat-ai==1.14.0 -d /tmp/pipecat && unzip -q -o /tmp/pipecat/*.whl -d /tmp/pipecat/x
  /tmp/st-venv/bin/python make_golden.py /tmp/pipecat/x $VOICE_MODELS_DIR/jfk-sample/jfk.wav
"""

import gzip
import json
import os
import sys
import wave

import numpy as np
import onnx
import onnxruntime as ort
import soxr
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox"
SR = 16000
SILENCE = int(0.3 * SR)
# Cases whose exact model input (the features after the graph's first QuantizeLinear: one uint8
# level per value) is stored in model_inputs.u8.gz, so the network is compared on identical input.
# Needed because the features cannot be bit-identical (f32 vs f64 FFT) and one level flipped at
# the input moves this quantized classifier's output by up to ~0.2 near its boundary (measured:
# 1e-5 of noise on the features moved onnxruntime's own probability from 0.18 to 0.11-0.32).
EXACT_INPUT = ["librivox-0870-whole", "librivox-0880-whole", "librivox-0920-cut", "jfk-fellow-americans", "kokoro-fox-cut", "noise"]
STRIDE = 128  # every 128th feature value is stored (500 of 64,000)


def read_wav(path):
    with wave.open(path) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2, path
        a = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
        return a, w.getframerate()


def write_wav(path, a):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(np.clip(np.round(a * 32767.0), -32768, 32767).astype(np.int16).tobytes())


def lcg_noise(n, seed=12345):
    """Uniform noise in [-0.1, 0.1) from a 32-bit LCG (Numerical Recipes), reproduced in Rust."""
    out = np.empty(n, np.float32)
    s = seed
    for i in range(n):
        s = (1664525 * s + 1013904223) % (1 << 32)
        out[i] = np.float32((s >> 8) / float(1 << 24) * 0.2 - 0.1)
    return out


def main():
    wheel_root, jfk_path = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.path.join(wheel_root, "pipecat/audio/turn/smart_turn"))
    from _whisper_features import compute_whisper_log_mel_features  # noqa: E402

    model = os.path.join(wheel_root, "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx")

    def session(level):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.graph_optimization_level = level
        so.log_severity_level = 3
        return ort.InferenceSession(model, so)

    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(model).graph.initializer}
    in_scale, in_zero = float(inits["input_features_scale"]), int(inits["input_features_zero_point"])
    levels = []

    s_ort = session(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    s_graph = session(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)

    # Kokoro's goldens at 16 kHz, committed beside this script.
    for name in ["hello", "fox"]:
        a, rate = read_wav(os.path.join(HERE, f"../../../kokoro/tests/data/golden-{name}.wav"))
        write_wav(os.path.join(HERE, f"kokoro-{name}-16k.wav"), soxr.resample(a, rate, SR, quality="HQ"))

    cases = []

    def band(feats):
        """onnxruntime's own spread under feature noise far below any real difference (N(0, 1e-5),
        16 draws): how much a correct port may differ on this input."""
        rng = np.random.default_rng(7)
        ps = [float(s_ort.run(None, {"input_features": (feats + rng.normal(0, 1e-5, feats.shape)).astype(np.float32)[None]})[0][0, 0]) for _ in range(16)]
        return [min(ps), max(ps)]

    def add(name, source, start, end, audio):
        utt = np.concatenate([audio[start:end], np.zeros(SILENCE, np.float32)])
        x = utt[-SR * 8 :]
        x = np.pad(x, (SR * 8 - len(x), 0))
        feats = compute_whisper_log_mel_features(x, do_normalize=True)
        inp = {"input_features": feats[None]}
        case = {}
        if name in EXACT_INPUT:
            q = np.clip(np.rint(feats / np.float32(in_scale)) + in_zero, 0, 255).astype(np.uint8)
            exact = {"input_features": ((q.astype(np.float32) - in_zero) * np.float32(in_scale))[None]}
            case = {"input_index": len(levels), "p_graph_exact_input": float(s_graph.run(None, exact)[0][0, 0])}
            levels.append(q.tobytes())
        cases.append(
            case | {
                "name": name,
                "source": source,
                "start": int(start),
                "end": int(end),
                "silence": SILENCE,
                "p_ort": float(s_ort.run(None, inp)[0][0, 0]),
                "p_ort_band": band(feats),
                "p_graph": float(s_graph.run(None, inp)[0][0, 0]),
                "feature_mean": float(feats.mean()),
                "feature_min": float(feats.min()),
                "stride": STRIDE,
                "features": [round(float(v), 5) for v in feats.reshape(-1)[::STRIDE]],
            }
        )
        print(f"{name:28s} ort {cases[-1]['p_ort']:.4f} graph {cases[-1]['p_graph']:.4f}")

    for f in sorted(os.listdir(LIBRIVOX)):
        if f.endswith(".wav"):
            a, rate = read_wav(os.path.join(LIBRIVOX, f))
            assert rate == SR
            tag = f.split("-")[-1][:-4]
            add(f"librivox-{tag}-whole", f"librivox/{f}", 0, len(a), a)
            add(f"librivox-{tag}-cut", f"librivox/{f}", 0, int(len(a) * 0.55), a)
    a, rate = read_wav(jfk_path)
    assert rate == SR
    add("jfk-whole", "jfk-sample/jfk.wav", 0, len(a), a)
    add("jfk-fellow-americans", "jfk-sample/jfk.wav", 0, int(2.1 * SR), a)
    for name in ["hello", "fox"]:
        a, _ = read_wav(os.path.join(HERE, f"kokoro-{name}-16k.wav"))
        add(f"kokoro-{name}-whole", f"kokoro-{name}-16k.wav", 0, len(a), a)
        add(f"kokoro-{name}-cut", f"kokoro-{name}-16k.wav", 0, len(a) // 2, a)
    add("silence", "silence", 0, 2 * SR, np.zeros(2 * SR, np.float32))
    add("tone-440", "tone", 0, SR, (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32))
    add("noise", "noise", 0, SR, lcg_noise(SR))

    with gzip.GzipFile(os.path.join(HERE, "model_inputs.u8.gz"), "wb", mtime=0) as fh:
        fh.write(b"".join(levels))
    out = {
        "generator": "make_golden.py: pipecat-ai 1.14.0 _whisper_features.py, onnxruntime " + ort.__version__,
        "input_scale": in_scale,
        "input_zero_point": in_zero,
        "cases": cases,
    }
    with open(os.path.join(HERE, "golden.json"), "w") as fh:
        json.dump(out, fh, separators=(",", ":"))


if __name__ == "__main__":
    main()
