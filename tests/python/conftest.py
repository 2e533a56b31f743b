"""Start the real services for the Python client tests.

Binaries come from $VOICE_BIN_DIR (scripts/test.sh builds them); models from the cache the
fetcher fills ($VOICE_MODELS_DIR or ~/.cache/voice-ai/models).
"""
import json, os, socket, subprocess, time, urllib.request
from pathlib import Path

import pytest


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def models_dir():
    d = os.environ.get("VOICE_MODELS_DIR")
    if d:
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "voice-ai" / "models"


class Service:
    def __init__(self, binary, args, log_name):
        self.port = free_port()
        self.grpc_port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / log_name, "w")
        exe = Path(os.environ["VOICE_BIN_DIR"]) / binary
        self.proc = subprocess.Popen(
            [str(exe), "--port", str(self.port), "--grpc-port", str(self.grpc_port), *args],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{binary} exited early, see {self.log.name}")
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=2) as r:
                    if r.status == 200 and json.load(r)["status"] == "ready":
                        return
            except Exception:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{binary} not ready in time")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


@pytest.fixture(scope="session")
def stt():
    s = Service("voice-stt", ["--model", "whisper-tiny.en", "--device", "cpu"], "pytest-voice-stt.log")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def jfk_path():
    p = models_dir() / "jfk-sample" / "jfk.wav"
    assert p.exists(), f"{p} missing: run `voice-models fetch jfk-sample`"
    return p


@pytest.fixture(scope="session")
def llm():
    s = Service("voice-llm", ["--model", "smollm2-135m-instruct", "--device", "cpu", "--context-length", "2048"],
                "pytest-voice-llm.log")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def embed(tmp_path_factory):
    data = tmp_path_factory.mktemp("rag")
    s = Service("voice-embed", ["--model", "all-minilm-l6-v2", "--device", "cpu", "--data-dir", str(data)],
                "pytest-voice-embed.log")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def tts():
    s = Service("voice-tts", ["--model", "kokoro-82m", "--device", "cpu"], "pytest-voice-tts.log")
    yield s
    s.stop()
