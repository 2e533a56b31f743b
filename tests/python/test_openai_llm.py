"""The official `openai` Python client against the real `voice-llm` (SmolLM2-135M-Instruct):
chat with and without streaming, text completions, models, and an error in OpenAI's shape."""
import openai
import pytest

MODEL = "smollm2-135m-instruct"
FRANCE = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def client(llm):
    return openai.OpenAI(base_url=llm.base + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_chat_non_stream_and_stream_agree(client):
    messages = [{"role": "user", "content": "Name three primary colors."}]
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=30, temperature=0)
    text = r.choices[0].message.content
    assert text and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=30, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert len(chunks) > 5


def test_completions_answer_paris(client):
    r = client.completions.create(model=MODEL, prompt=FRANCE, max_tokens=30, temperature=0)
    assert "Paris" in r.choices[0].text
    stream = client.completions.create(model=MODEL, prompt=FRANCE, max_tokens=30, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == r.choices[0].text


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_errors_are_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=7)
    assert "temperature" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
