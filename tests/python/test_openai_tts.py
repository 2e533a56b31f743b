"""The official openai client's audio.speech against voice-tts: streamed to a file, a valid WAV."""
import wave

import openai
import pytest


def client(svc):
    return openai.OpenAI(base_url=svc.base + "/v1", api_key="unused")


def test_speech_streamed_to_file_is_valid_wav(tts, tmp_path):
    out = tmp_path / "speech.wav"
    with client(tts).audio.speech.with_streaming_response.create(
        model="tts-1", voice="af_heart", input="Hello from the official client. This is a second sentence.",
        response_format="wav",
    ) as resp:
        assert resp.headers["content-type"] == "audio/wav"
        resp.stream_to_file(out)
    with wave.open(str(out), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        frames = w.readframes(10 * 24000)
    seconds = len(frames) / 2 / 24000
    assert 2.0 < seconds < 10.0, seconds


def test_speech_pcm_and_speed(tts):
    c = client(tts)
    normal = c.audio.speech.create(model="tts-1", voice="am_adam", input="Speed changes the length.", response_format="pcm").content
    fast = c.audio.speech.create(model="tts-1", voice="am_adam", input="Speed changes the length.", response_format="pcm", speed=1.5).content
    assert len(normal) % 2 == 0 and len(fast) < 0.8 * len(normal)


def test_errors_are_openai_errors(tts):
    c = client(tts)
    with pytest.raises(openai.BadRequestError) as e:
        c.audio.speech.create(model="tts-1", voice="nobody", input="hi")
    assert "unknown voice" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        c.audio.speech.create(model="tts-1", voice="af_heart", input="hi", speed=9)
