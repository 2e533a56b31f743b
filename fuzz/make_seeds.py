#!/usr/bin/env python3
"""Write the seed corpus of every fuzz target (fuzz/corpus/<target>/seed-*): small synthetic
inputs (and a few near-misses) the fuzzer mutates from. Deterministic; stdlib only. Not
committed (they are shaped like model files): scripts/test.sh and scripts/fuzz.sh run this."""
import io, json, math, os, struct, wave, zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def wav(rate=16000, secs=0.05, channels=1, width=2):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        n = int(rate * secs)
        amp = {1: 100, 2: 12000, 4: 10**9}[width]
        fmt = {1: "B", 2: "h", 4: "i"}[width]
        frames = b"".join(struct.pack("<" + fmt * channels, *([int(amp * math.sin(i / 5)) + (128 if width == 1 else 0)] * channels)) for i in range(n))
        w.writeframes(frames)
    return buf.getvalue()


def float_wav(rate=48000, n=400):
    data = b"".join(struct.pack("<f", 0.5 * math.sin(i / 7)) for i in range(n))
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


# audio_decode
put("audio_decode", "pcm16-16k.wav", wav())
put("audio_decode", "pcm16-44k-stereo.wav", wav(44100, 0.02, 2))
put("audio_decode", "pcm8-8k.wav", wav(8000, 0.05, 1, 1))
put("audio_decode", "f32-48k.wav", float_wav())
put("audio_decode", "truncated.wav", wav()[:60])
put("audio_decode", "ogg-magic", b"OggS\x00\x02" + bytes(40))
put("audio_decode", "flac-magic", b"fLaC\x00\x00\x00\x22" + bytes(34))
put("audio_decode", "mp3-frame", b"\xff\xfb\x90\x64" + bytes(413))

# multipart: first byte picks the boundary (0 -> "X")
form = (b"--X\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
        b"--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n" + wav(secs=0.01) +
        b"\r\n--X\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\njson\r\n--X--\r\n")
put("multipart", "transcription", b"\x00" + form)
put("multipart", "empty-parts", b"\x00--X\r\n\r\n\r\n--X--\r\n")


# ct2_model: binary version 6, spec, revision, variables (name, rank, dims, dtype, nbytes, data), aliases
def ct2_string(s):
    b = s.encode() + b"\x00"
    return struct.pack("<H", len(b)) + b


def ct2():
    out = struct.pack("<I", 6) + ct2_string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", 3)
    out += ct2_string("encoder/num_heads") + bytes([0]) + bytes([4]) + struct.pack("<I", 4) + struct.pack("<i", 6)  # int32 scalar
    out += ct2_string("encoder/conv1/weight") + bytes([2]) + struct.pack("<II", 2, 3) + bytes([0]) + struct.pack("<I", 24) + struct.pack("<6f", *range(6))
    out += ct2_string("decoder/embeddings/weight") + bytes([2]) + struct.pack("<II", 2, 2) + bytes([2]) + struct.pack("<I", 8) + struct.pack("<4h", 1, 2, 3, 4)
    out += struct.pack("<I", 1) + ct2_string("decoder/projection/weight") + ct2_string("decoder/embeddings/weight")
    return out


put("ct2_model", "tiny.bin", ct2())
put("ct2_model", "header-only.bin", ct2()[:30])


# gguf_model: v3 header, metadata (strings, ints, arrays), tensor infos, aligned data
def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf():
    kv = [
        (gstr("general.architecture"), 8, gstr("llama")),
        (gstr("llama.block_count"), 4, struct.pack("<I", 1)),
        (gstr("llama.context_length"), 4, struct.pack("<I", 64)),
        (gstr("llama.embedding_length"), 4, struct.pack("<I", 8)),
        (gstr("llama.attention.head_count"), 4, struct.pack("<I", 2)),
        (gstr("tokenizer.ggml.model"), 8, gstr("gpt2")),
        (gstr("tokenizer.ggml.tokens"), 9, struct.pack("<IQ", 8, 3) + gstr("a") + gstr("b") + gstr("ab")),
        (gstr("tokenizer.ggml.merges"), 9, struct.pack("<IQ", 8, 1) + gstr("a b")),
        (gstr("tokenizer.ggml.eos_token_id"), 4, struct.pack("<I", 2)),
    ]
    tensors = [("token_embd.weight", [8, 3], 0, 0)]  # f32
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for k, t, v in kv:
        out += k + struct.pack("<I", t) + v
    for name, dims, ty, off in tensors:
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ty, off)
    out += bytes((-len(out)) % 32)
    out += struct.pack("<24f", *[i / 10 for i in range(24)])
    return out


put("gguf_model", "tiny.gguf", gguf())


# onnx_model: ModelProto { ir_version, graph { initializer: TensorProto {dims, data_type, name, raw_data} } }
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def tensor(name, dims, dtype, raw):
    return b"".join(field(1, 0, d) for d in dims) + field(2, 0, dtype) + field(8, 2, name.encode()) + field(9, 2, raw)


graph = field(5, 2, tensor("decoder.weight", [2, 2], 1, struct.pack("<4f", 1, 2, 3, 4)))
graph += field(5, 2, tensor("/decoder/conv1/Conv_quant_scale", [], 1, struct.pack("<f", 0.1)))
graph += field(5, 2, tensor("/decoder/conv1/Conv_quant", [2, 2], 3, bytes([1, 255, 3, 4])))
graph += field(1, 2, field(1, 2, b"x") + field(2, 2, b"y") + field(4, 2, b"MatMulInteger"))
put("onnx_model", "tiny.onnx", field(1, 0, 8) + field(7, 2, graph))


# safetensors_model: u64 header length, JSON header, data
def safetensors(tensors):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


put("safetensors_model", "tiny.safetensors", safetensors({
    "stft.forward_basis_buffer": ("F32", [2, 1, 2], struct.pack("<4f", 1, 0, 0, 1)),
    "encoder.0.reparam_conv.weight": ("F32", [1, 1, 3], struct.pack("<3f", 0.1, 0.2, 0.3)),
    "decoder.rnn.weight_ih": ("F16", [2], struct.pack("<2e", 0.5, -0.5)),
}))
put("safetensors_model", "empty-header", struct.pack("<Q", 2) + b"{}")

# g2p_text
for i, t in enumerate([
    "Hello, world! It's 3:45 pm on Jan. 5th, 2024.",
    "The price is $1,234.56 (about 12% more) - see https://example.com or mail a@b.co.",
    "Dr. Smith's AI-driven NASA project won 1st place; U.S.A. & U.K. 1990s.",
    "Mm-hmm... yeah, okay? \u00e9t\u00e9, na\u00efve, \U0001F600, <b>bold</b>, \u65e5\u672c",
    "A" * 300 + " " + "word " * 200,
]):
    put("g2p_text", f"text{i}", t)

# livekit_event: FfiEvent bytes; a panic event, a log batch, a room event with an unknown handle
put("livekit_event", "panic", field(20, 2, field(1, 2, b"boom")) if False else b"\xa2\x01\x06\x0a\x04boom")
put("livekit_event", "empty", b"")
put("livekit_event", "unknown-field", field(99, 2, b"\x08\x01"))
print("seeds written under", ROOT)
