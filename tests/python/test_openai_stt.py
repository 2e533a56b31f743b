"""The official `openai` Python client against the running voice-stt."""
import re

import openai
import pytest

JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


def norm(t):
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", t.lower().replace("-", " ")).split())


@pytest.fixture(scope="module")
def client(stt):
    return openai.OpenAI(base_url=stt.base + "/v1", api_key="not-needed-locally", max_retries=0)


def test_json(client, jfk_path):
    with open(jfk_path, "rb") as f:
        r = client.audio.transcriptions.create(model="whisper-tiny.en", file=f)
    assert norm(r.text) == JFK


def test_text(client, jfk_path):
    with open(jfk_path, "rb") as f:
        r = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert isinstance(r, str) and norm(r) == JFK


def test_srt(client, jfk_path):
    with open(jfk_path, "rb") as f:
        r = client.audio.transcriptions.create(model="whisper-tiny.en", file=f, response_format="srt")
    assert r.startswith("1\n00:00:00,000 --> ")
    words = " ".join(l for l in r.splitlines() if "-->" not in l and not l.strip().isdigit())
    assert norm(words) == JFK


def test_verbose_json(client, jfk_path):
    with open(jfk_path, "rb") as f:
        r = client.audio.transcriptions.create(
            model="whisper-tiny.en", file=f, response_format="verbose_json",
            timestamp_granularities=["segment"], language="en")
    assert norm(r.text) == JFK
    assert r.language == "english"
    assert abs(r.duration - 11.0) < 0.1
    assert len(r.segments) >= 1
    assert all(s.end > s.start for s in r.segments)
    assert r.segments[-1].end <= 11.1


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert "whisper-tiny.en" in ids


def test_errors_surface_as_openai_errors(client, jfk_path):
    with pytest.raises(openai.NotFoundError) as e:
        with open(jfk_path, "rb") as f:
            client.audio.transcriptions.create(model="whisper-huge-v9", file=f)
    assert "does not exist" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-tiny.en", file=("noise.wav", b"RIFF\x00\x01garbage"))
