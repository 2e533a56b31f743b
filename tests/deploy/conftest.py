"""Fixtures for the deploy script tests: a PATH of fake commands that record their calls."""
import json
import os
import pathlib
import subprocess

import shlex
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FAKE = pathlib.Path(__file__).resolve().parent / "fakes" / "fake_cmd.py"
DEFAULT_FAKES = ("kubectl", "helm", "curl", "openssl", "docker", "id")


class Env:
    def __init__(self, tmp: pathlib.Path):
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.log = tmp / "calls.jsonl"
        self.log.touch()
        self.rules_path = tmp / "rules.json"
        self.rules = []
        for name in DEFAULT_FAKES:
            self.fake(name)
        self.rule("id", "-u", "0\n")

    def fake(self, name):
        wrapper = self.bin / name
        wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE))} {name} \"$@\"\n")
        wrapper.chmod(0o755)

    def remove_fake(self, name):
        (self.bin / name).unlink(missing_ok=True)

    def rule(self, cmd, match="", stdout="", rc=0, **kw):
        """Rules added later take precedence over earlier ones (tests refine the defaults)."""
        self.rules.insert(0, {"cmd": cmd, "match": match, "stdout": stdout, "rc": rc, **kw})

    def run(self, script, *args, check=None):
        self.rules_path.write_text(json.dumps(self.rules))
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.tmp),
            "FAKE_LOG": str(self.log),
            "FAKE_RULES": str(self.rules_path),
            "LC_ALL": "C.UTF-8",
        }
        p = subprocess.run(["bash", str(REPO / script), *args], env=env, capture_output=True, text=True, timeout=120)
        p.output = p.stdout + p.stderr
        if check is not None:
            assert (p.returncode == 0) == check, p.output
        return p

    def calls(self, cmd=None):
        out = [json.loads(l) for l in self.log.read_text().splitlines() if l.strip()]
        return [" ".join([c["cmd"], *c["args"]]) for c in out if cmd is None or c["cmd"] == cmd]


@pytest.fixture
def env(tmp_path):
    # /usr/bin may hold a real nvidia-smi / k3s on a GPU host: refuse to run the tests there
    # rather than call them.
    for real in ("nvidia-smi", "k3s"):
        assert not pathlib.Path("/usr/bin", real).exists() and not pathlib.Path("/bin", real).exists(), \
            f"/usr/bin/{real} exists: these tests need it to be absent (they fake it)"
    return Env(tmp_path)


def index_of(calls, pattern, start=0):
    for i in range(start, len(calls)):
        if pattern in calls[i]:
            return i
    raise AssertionError(f"no call containing {pattern!r} after #{start} in:\n" + "\n".join(calls))


def assert_in_order(calls, *patterns):
    i = -1
    for p in patterns:
        i = index_of(calls, p, i + 1)
