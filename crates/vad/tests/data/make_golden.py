"""Reference speech probabilities for tests/golden.rs (writes golden.json next to this file).

Run:
    python make_golden.py ~/.cache/voice-ai/models/silero-vad ~/.cache/voice-ai/models/jfk-sample/jfk.wav
Needs numpy and onnxruntime (benches/requirements.txt pins the versions used: onnxruntime 1.32).

Input: jfk.wav (16 kHz mono s16, read as s16 / 32768 like symphonia) followed by 2 s of digital
silence, zero-padded to a whole number of 512-sample windows (as upstream's audio_forward).

- "onnx": the official silero_vad.onnx in onnxruntime, driven exactly as upstream's
  OnnxWrapper.__call__ (utils_vad.py; copied here because that module imports torch): 64 samples
  of context (zeros at the start) prepended to each 512-sample window, the context for the next
  call being the last 64 samples of that input, state (2, 1, 128) carried, sr = 16000.
- "safetensors": silero_vad_16k.safetensors through a numpy port of the package's
  tinygrad_model.py (TinySileroVAD.__call__), with the same windows and context. In 6.2.3 that
  file holds another checkpoint than the ONNX model, so it cannot be checked against onnxruntime.
"""
import hashlib, json, struct, sys, wave
from pathlib import Path
import numpy as np
import onnxruntime as ort

WINDOW, CONTEXT, SR = 512, 64, 16000
SILENCE = 2 * SR


def read_wav(path):
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == SR and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0


def windows(audio):
    pad = (-len(audio)) % WINDOW
    audio = np.concatenate([audio, np.zeros(pad, np.float32)])
    return [audio[i:i + WINDOW] for i in range(0, len(audio), WINDOW)]


def onnx_probs(model, audio):
    opts = ort.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"], sess_options=opts)
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, CONTEXT), np.float32)
    out = []
    for w in windows(audio):
        x = np.concatenate([context, w[None, :]], axis=1)
        p, state = sess.run(None, {"input": x, "state": state, "sr": np.array(SR, dtype=np.int64)})
        context = x[..., -CONTEXT:]
        out.append(float(p[0, 0]))
    return out


def load_safetensors(path):
    b = Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], np.float32).reshape(v["shape"])
            for k, v in header.items() if k != "__metadata__"}


def conv1d(x, w, b, stride, pad):
    """x (C, T), w (O, C, K) -> (O, T')"""
    xp = np.pad(x, ((0, 0), (pad, pad)))
    t_out = (xp.shape[1] - w.shape[2]) // stride + 1
    y = np.stack([np.einsum("ock,ck->o", w, xp[:, t * stride:t * stride + w.shape[2]]) for t in range(t_out)], axis=1)
    return y if b is None else y + b[:, None]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def tinygrad_probs(path, audio):
    """TinySileroVAD.__call__ of tinygrad_model.py, in numpy (batch 1)."""
    W = load_safetensors(path)
    h = np.zeros(128, np.float32)
    c = np.zeros(128, np.float32)
    context = np.zeros(CONTEXT, np.float32)
    out = []
    for w in windows(audio):
        x = np.concatenate([context, w])
        context = x[-CONTEXT:]
        x = np.pad(x, (0, 64), mode="reflect")
        s = conv1d(x[None, :], W["stft_conv.weight"], None, 128, 0)
        y = np.sqrt(s[:129] ** 2 + s[129:] ** 2)
        y = np.maximum(conv1d(y, W["conv1.weight"], W["conv1.bias"], 1, 1), 0)
        y = np.maximum(conv1d(y, W["conv2.weight"], W["conv2.bias"], 2, 1), 0)
        y = np.maximum(conv1d(y, W["conv3.weight"], W["conv3.bias"], 2, 1), 0)
        y = np.maximum(conv1d(y, W["conv4.weight"], W["conv4.bias"], 1, 1), 0)[:, 0]
        g = W["lstm_cell.weight_ih"] @ y + W["lstm_cell.bias_ih"] + W["lstm_cell.weight_hh"] @ h + W["lstm_cell.bias_hh"]
        i, f, gg, o = np.split(g, 4)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(gg)
        h = sigmoid(o) * np.tanh(c)
        p = sigmoid(W["final_conv.weight"][0, :, 0] @ np.maximum(h, 0) + W["final_conv.bias"][0])
        out.append(float(p))
    return out


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(model_dir, wav):
    model_dir = Path(model_dir)
    speech = read_wav(wav)
    audio = np.concatenate([speech, np.zeros(SILENCE, np.float32)])
    onnx = onnx_probs(model_dir / "silero_vad.onnx", audio)
    tiny = tinygrad_probs(model_dir / "silero_vad_16k.safetensors", audio)
    diff = np.abs(np.array(onnx) - np.array(tiny))
    print(f"{len(onnx)} windows; safetensors checkpoint vs ONNX: max |dp| {diff.max():.3f} at window {diff.argmax()}")
    out = {
        "generator": f"onnxruntime {ort.__version__}, numpy {np.__version__}",
        "audio": {"file": "jfk-sample/jfk.wav", "sha256": sha256(wav), "samples": len(speech),
                  "appended_silence": SILENCE, "windows": len(onnx)},
        "onnx": {"file": "silero_vad.onnx", "sha256": sha256(model_dir / "silero_vad.onnx"), "probs": onnx},
        "safetensors": {"file": "silero_vad_16k.safetensors", "sha256": sha256(model_dir / "silero_vad_16k.safetensors"),
                        "reference": "numpy port of tinygrad_model.py", "probs": tiny},
    }
    path = Path(__file__).parent / "golden.json"
    path.write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main(*sys.argv[1:3])
