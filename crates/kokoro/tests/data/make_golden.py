"""Reference outputs of onnxruntime on the registry Kokoro int8 ONNX, for tests/golden.rs.

Run (writes golden.json and golden-*.wav next to this file):
    python make_golden.py ~/.cache/voice-ai/models/kokoro-82m
Needs numpy and onnxruntime (benches/requirements.txt pins the versions used: onnxruntime 1.32).
The phoneme strings are misaki's output for the sentences in the comments, fixed here so the test
does not depend on the text front end.
"""
import json, sys, wave
from pathlib import Path
import numpy as np
import onnxruntime as ort

CASES = [
    # "Hello world, this is a test of Kokoro."
    ("hello", "həlˈO wˈɜɹld, ðɪs ɪz ɐ tˈɛst ʌv kəkˈɔɹO.", "af_heart", 1.0),
    # "The quick brown fox jumps over the lazy dog!"
    ("fox", "ðə kwˈɪk bɹˈWn fˈɑks ʤˈʌmps ˈOvəɹ ðə lˈAzi dˈɔɡ!", "bm_george", 1.0),
    # "Would you like some tea? I'll put the kettle on."
    ("tea", "wʊd ju lˈIk sʌm tˈi? Il pˈʊt ðə kˈɛTᵊl ˈɔn.", "am_adam", 1.25),
]

def main(model_dir):
    model_dir = Path(model_dir)
    vocab = json.load(open(model_dir / "vocab.json"))["vocab"]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), so, providers=["CPUExecutionProvider"])
    here = Path(__file__).parent
    out = []
    for name, ph, voice, speed in CASES:
        ids = [vocab[c] for c in ph if c in vocab]
        tokens = np.array([[0, *ids, 0]], dtype=np.int64)
        pack = np.fromfile(model_dir / "voices" / f"{voice}.bin", dtype=np.float32).reshape(510, 256)
        style = pack[len(ids) - 1][None, :]
        # The duration node's output, exposed by name (it is an intermediate of the graph).
        audio = sess.run(["audio"], {"tokens": tokens, "style": style, "speed": np.array([speed], dtype=np.float32)})[0]
        wav = here / f"golden-{name}.wav"
        pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1); w.setsampwidth(2); w.setframerate(24000); w.writeframes(pcm.tobytes())
        out.append({"name": name, "phonemes": ph, "voice": voice, "speed": speed, "tokens": tokens[0].tolist(),
                    "durations": durations(model_dir, tokens, style, speed), "wav": wav.name, "samples": int(len(audio))})
        print(name, len(ids), "phonemes", len(audio) / 24000, "s")
    json.dump({"generator": "onnxruntime " + ort.__version__, "cases": out}, open(here / "golden.json", "w"), indent=1)

def durations(model_dir, tokens, style, speed):
    import onnx
    from onnx import helper, TensorProto
    m = onnx.load(str(model_dir / "model.onnx"))
    m.graph.output.append(helper.make_tensor_value_info("/encoder/Clip_output_0", TensorProto.FLOAT, None))
    so = ort.SessionOptions(); so.intra_op_num_threads = 2
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    d = s.run(["/encoder/Clip_output_0"], {"tokens": tokens, "style": style, "speed": np.array([speed], dtype=np.float32)})[0]
    return [int(v) for v in np.asarray(d).ravel()]

if __name__ == "__main__":
    main(sys.argv[1])
