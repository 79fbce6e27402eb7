"""The real llama-server with an API key: a request without it is refused (401) while /health
stays public; kitty-ops's own start checks, chat, status and drained stop pass with it; the key
is in no argv, record, log or output."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.harness import real_env

pytestmark = pytest.mark.real_engine

KEY = "kitty-test-key-7f3a9c2e51"


def post(url: str, headers: dict[str, str]) -> int:
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", body, {"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_server_with_an_api_key_refuses_strangers_and_serves_kitty_ops(project):
    port = real_env(project, {"q4": {"API_KEY": KEY}})["q4"]
    started = project.run("start", "--json", timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    url = f"http://127.0.0.1:{port}"
    assert post(url, {}) == 401
    assert post(url, {"Authorization": "Bearer wrong"}) == 401
    assert post(url, {"Authorization": f"Bearer {KEY}"}) == 200
    with urllib.request.urlopen(url + "/health", timeout=10) as response:
        assert response.status == 200  # public, as llama.cpp keeps it

    chat = project.run("chat", "--max-tokens", "4", "Say hi.", timeout=120)
    assert chat.returncode == 0, chat.stderr
    status = project.run("status", "--json")
    q4 = next(c for c in json.loads(status.stdout)["components"] if (c["tier"], c["name"]) == ("llama", "q4"))
    assert q4["requests_in_flight"] == 0  # /slots read with the key

    record = project.record("q4")
    pid = record["pid"]
    ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True).stdout
    stopped = project.run("stop", "--json", timeout=120)
    assert stopped.returncode == 0, stopped.stdout
    assert json.loads(stopped.stdout)["components"][0]["drain"]["reason"] == ""  # it could read /slots
    seen = {"ps": ps, "record": json.dumps(record), "log": (project.logs / "llamacpp-q4.log").read_text(),
            "start": started.stdout + started.stderr, "chat": chat.stdout + chat.stderr,
            "status": status.stdout + status.stderr, "stop": stopped.stdout + stopped.stderr}
    assert [where for where, text in seen.items() if KEY in text] == []
