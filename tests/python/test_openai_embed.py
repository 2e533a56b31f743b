"""The official `openai` Python client against the real `voice-embed` (all-MiniLM-L6-v2):
single and batched embeddings, base64 transport, the reference vectors, and errors."""
import json
import math
from pathlib import Path

import openai
import pytest

MODEL = "all-minilm-l6-v2"
REFERENCE = Path(__file__).resolve().parents[2] / "crates/embeddings/tests/data/minilm-reference.json"


@pytest.fixture(scope="module")
def client(embed):
    return openai.OpenAI(base_url=embed.base + "/v1", api_key="unused", max_retries=0, timeout=120)


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_match_the_reference(client):
    ref = json.loads(REFERENCE.read_text())["sentences"]
    r = client.embeddings.create(model=MODEL, input=[s["text"] for s in ref], encoding_format="float")
    assert r.model == MODEL and len(r.data) == len(ref)
    assert [d.index for d in r.data] == list(range(len(ref)))
    assert r.usage.prompt_tokens == sum(len(s["input_ids"]) for s in ref)
    for d, s in zip(r.data, ref):
        assert len(d.embedding) == 384
        assert cosine(d.embedding, s["embedding"]) > 1 - 1e-4


def test_base64_is_what_the_client_uses_by_default(client):
    # openai-python asks for base64 unless told otherwise and decodes it with numpy/struct.
    a = client.embeddings.create(model=MODEL, input="How do I reset my password?").data[0].embedding
    b = client.embeddings.create(model=MODEL, input="How do I reset my password?", encoding_format="float").data[0].embedding
    assert len(a) == 384
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-6


def test_paraphrase_beats_unrelated(client):
    r = client.embeddings.create(model=MODEL, input=["Where can I charge my phone?", "Is there a socket to plug my mobile in?",
                                                     "The lasagna needs forty minutes in the oven."])
    e = [d.embedding for d in r.data]
    assert cosine(e[0], e[1]) > cosine(e[0], e[2]) + 0.2


def test_errors_have_openai_shape(client):
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-large", input="hi")
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input=[])
    assert e.value.status_code == 400 and "input" in str(e.value)
