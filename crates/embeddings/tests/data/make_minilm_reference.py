#!/usr/bin/env python3
"""Generate reference sentence embeddings for all-MiniLM-L6-v2.

Independent implementation: a tiny safetensors reader plus a float64 numpy
BERT encoder (no torch, no transformers, no sentence-transformers, no
safetensors package). Only the HF `tokenizers` package is used, for WordPiece.

Pipeline (matches sentence-transformers for this model):
  tokenize (BertNormalizer lowercase, [CLS] ... [SEP], truncate to
  max_seq_length from sentence_bert_config.json (256), no padding)
  -> BERT forward (6 layers, post-LN, exact erf GELU)
  -> pooling per 1_Pooling/config.json (mean over attention-mask tokens, or CLS)
  -> L2 normalise.

Usage:
  python make_minilm_reference.py [MODEL_DIR] [OUT_JSON]
Defaults: MODEL_DIR=$VOICE_AI_MODEL_DIR or ~/.cache/voice-ai/models/all-minilm-l6-v2,
          OUT_JSON=<this dir>/minilm-reference.json
"""

import json
import math
import os
import struct
import sys

import numpy as np
import tokenizers
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL_DIR = os.environ.get(
    "VOICE_AI_MODEL_DIR",
    os.path.expanduser("~/.cache/voice-ai/models/all-minilm-l6-v2"),
)

SENTENCES = [
    "How do I reset my password?",
    "The quick brown fox jumps over the lazy dog.",
    "The meeting moved to 3:30 p.m. on 12/05.",
    "Café crème brûlée costs €4.50 in Zürich.",
    (
        "After the storm passed through the valley late on Tuesday night, the "
        "volunteers from the neighbouring villages gathered at the old stone "
        "bridge to clear fallen branches, check on elderly residents, and "
        "restore power to the farms, while the children watched from the "
        "hillside as the river slowly returned to its usual quiet course "
        "beneath a sky full of stars."
    ),
]

SANITY = [
    ("A man is eating food.", "A man is eating a piece of bread.", 0.60, 1.0),
    ("A man is eating food.", "A man is riding a horse.", -0.1, 0.35),
]

# Published similarity matrix for all-MiniLM-L6-v2 from the sentence-transformers
# README / sbert.net quickstart (printed to 4 decimals there):
#   tensor([[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]])
PUBLISHED = [
    ("The weather is lovely today.", "It's so sunny outside!", 0.6660),
    ("The weather is lovely today.", "He drove to the stadium.", 0.1046),
    ("It's so sunny outside!", "He drove to the stadium.", 0.1411),
]

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """Minimal safetensors reader: u64 LE header length, JSON header, raw data."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = np.dtype(DTYPES[info["dtype"]]).newbyteorder("<")
        start, end = info["data_offsets"]
        arr = np.frombuffer(buf, dtype=dt, count=(end - start) // dt.itemsize, offset=base + start)
        tensors[name] = arr.reshape(info["shape"])
    return tensors


class Bert:
    def __init__(self, tensors, cfg):
        # Handle an optional "bert." (or other) prefix on the tensor names.
        prefix = ""
        for k in tensors:
            if k.endswith("embeddings.word_embeddings.weight"):
                prefix = k[: -len("embeddings.word_embeddings.weight")]
                break
        self.t = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.cfg = cfg
        self.eps = float(cfg["layer_norm_eps"])
        self.n_heads = int(cfg["num_attention_heads"])
        self.hidden = int(cfg["hidden_size"])
        self.n_layers = int(cfg["num_hidden_layers"])
        assert cfg.get("hidden_act", "gelu") == "gelu", cfg.get("hidden_act")
        assert cfg.get("position_embedding_type", "absolute") == "absolute"

    def w(self, name):
        return self.t[name].astype(np.float64)

    def linear(self, x, name):
        return x @ self.w(name + ".weight").T + self.w(name + ".bias")

    def layer_norm(self, x, name):
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)  # biased variance
        return (x - mu) / np.sqrt(var + self.eps) * self.w(name + ".weight") + self.w(name + ".bias")

    @staticmethod
    def gelu(x):
        erf = np.vectorize(math.erf, otypes=[np.float64])
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))

    def forward(self, input_ids, token_type_ids, attention_mask):
        ids = np.asarray(input_ids, dtype=np.int64)
        tt = np.asarray(token_type_ids, dtype=np.int64)
        mask = np.asarray(attention_mask, dtype=np.float64)
        seq = ids.shape[0]
        x = (
            self.w("embeddings.word_embeddings.weight")[ids]
            + self.w("embeddings.position_embeddings.weight")[np.arange(seq)]
            + self.w("embeddings.token_type_embeddings.weight")[tt]
        )
        x = self.layer_norm(x, "embeddings.LayerNorm")

        h = self.n_heads
        d = self.hidden // h
        scale = 1.0 / math.sqrt(d)
        # Additive mask over keys, as in HF BERT: 0 for real tokens, large negative for padding.
        key_bias = (1.0 - mask)[None, None, :] * np.finfo(np.float64).min / 2

        for i in range(self.n_layers):
            p = f"encoder.layer.{i}"
            q = self.linear(x, f"{p}.attention.self.query").reshape(seq, h, d).transpose(1, 0, 2)
            k = self.linear(x, f"{p}.attention.self.key").reshape(seq, h, d).transpose(1, 0, 2)
            v = self.linear(x, f"{p}.attention.self.value").reshape(seq, h, d).transpose(1, 0, 2)
            scores = (q @ k.transpose(0, 2, 1)) * scale + key_bias  # [h, seq, seq]
            scores = scores - scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(1, 0, 2).reshape(seq, self.hidden)
            attn = self.linear(ctx, f"{p}.attention.output.dense")
            x = self.layer_norm(attn + x, f"{p}.attention.output.LayerNorm")
            inter = self.gelu(self.linear(x, f"{p}.intermediate.dense"))
            out = self.linear(inter, f"{p}.output.dense")
            x = self.layer_norm(out + x, f"{p}.output.LayerNorm")
        return x  # [seq, hidden]


def pool(hidden_states, attention_mask, pool_cfg):
    mask = np.asarray(attention_mask, dtype=np.float64)[:, None]
    if pool_cfg.get("pooling_mode_mean_tokens"):
        return (hidden_states * mask).sum(axis=0) / max(mask.sum(), 1e-9)
    if pool_cfg.get("pooling_mode_cls_token"):
        return hidden_states[0]
    raise SystemExit(f"unsupported pooling config: {pool_cfg}")


def fmt7(x):
    """Round to 7 significant digits, emitted as a JSON number."""
    s = f"{x:.7g}"
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}e{int(exp)}"
    return s


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL_DIR
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "minilm-reference.json")

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(model_dir, "1_Pooling", "config.json")) as f:
        pool_cfg = json.load(f)
    with open(os.path.join(model_dir, "sentence_bert_config.json")) as f:
        st_cfg = json.load(f)
    max_len = int(st_cfg.get("max_seq_length", 256))

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    # tokenizer.json ships truncation=128 and fixed padding=128; sentence-transformers
    # uses max_seq_length (256) and pads only to the longest in the batch.
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)

    model = Bert(read_safetensors(os.path.join(model_dir, "model.safetensors")), cfg)

    def embed(text):
        enc = tok.encode(text)
        hs = model.forward(enc.ids, enc.type_ids, enc.attention_mask)
        v = pool(hs, enc.attention_mask, pool_cfg)
        v = v / np.linalg.norm(v)
        return enc, v

    # Sanity checks (printed only, not written to the JSON).
    ok = True
    for a, b, lo, hi in SANITY:
        _, va = embed(a)
        _, vb = embed(b)
        cos = float(va @ vb)
        good = lo <= cos <= hi
        ok &= good
        print(f"sanity cos({a!r}, {b!r}) = {cos:.6f}  expected in [{lo}, {hi}]  {'OK' if good else 'FAIL'}")
    for a, b, want in PUBLISHED:
        cos = float(embed(a)[1] @ embed(b)[1])
        good = abs(cos - want) <= 0.00051  # published to 4 decimals (float32 torch)
        ok &= good
        print(f"published cos({a!r}, {b!r}) = {cos:.6f}  published {want:.4f}  {'OK' if good else 'FAIL'}")

    records = []
    for text in SENTENCES:
        enc, v = embed(text)
        norm = float(np.linalg.norm(v))
        ok &= abs(norm - 1.0) < 1e-9
        rounded = [float(fmt7(x)) for x in v]
        print(f"{len(enc.ids):3d} tokens  norm={norm:.12f}  rounded-norm={np.linalg.norm(rounded):.9f}  {text[:50]!r}")
        records.append((text, enc.ids, v))

    # Compact but diff-friendly layout: one line per array.
    lines = ["{"]
    lines.append(f'  "model": "all-minilm-l6-v2",')
    lines.append('  "generator": "make_minilm_reference.py (numpy float64, independent implementation)",')
    lines.append(f'  "tokenizers_version": {json.dumps(tokenizers.__version__)},')
    lines.append(f'  "numpy_version": {json.dumps(np.__version__)},')
    lines.append(f'  "max_seq_length": {max_len},')
    lines.append(f'  "pooling": {json.dumps("mean" if pool_cfg.get("pooling_mode_mean_tokens") else "cls")},')
    lines.append(f'  "normalized": true,')
    lines.append('  "sentences": [')
    for j, (text, ids, v) in enumerate(records):
        lines.append("    {")
        lines.append(f"      \"text\": {json.dumps(text, ensure_ascii=False)},")
        lines.append(f"      \"input_ids\": [{', '.join(str(i) for i in ids)}],")
        lines.append(f"      \"embedding\": [{', '.join(fmt7(float(x)) for x in v)}]")
        lines.append("    }" + ("," if j + 1 < len(records) else ""))
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # validate
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {out_path} ({len(text.encode('utf-8'))} bytes)")
    if not ok:
        raise SystemExit("sanity checks FAILED")


if __name__ == "__main__":
    main()
