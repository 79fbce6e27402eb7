"""Containers reach the llama servers with the default settings on Linux: brain calls q4 at
host.docker.internal (the Docker bridge's gateway), so kitty-ops binds q4 there instead of
127.0.0.1, and every probe follows the recorded URL. A loopback bind the operator chose for a
server brain calls fails the start before anything runs, naming the variable and the fix."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import psutil
import pytest

pytestmark = pytest.mark.docker


def docker0() -> str:
    return next(a.address for a in psutil.net_if_addrs()["docker0"] if a.family.name == "AF_INET")


def brain_saw(stack) -> dict:
    logs = stack.compose("logs", "--no-log-prefix", "brain").stdout
    return json.loads(next(line for line in logs.splitlines() if '"event": "started"' in line))


def test_with_default_settings_brain_reaches_q4_bound_on_the_bridge_gateway(stack):
    stack.stack_env({"q4": ""})
    code, out = stack.json("start", timeout=180)
    assert code == 0, out
    assert urlparse(stack.record("q4")["url"]).hostname == docker0()
    assert brain_saw(stack)["llama_health"] == "200"  # brain's own call through host.docker.internal
    health = stack.run("health", "--json")
    assert health.returncode == 0, health.stdout  # probes follow the recorded URL
    assert stack.run("stop", timeout=120).returncode == 0


def test_an_explicit_loopback_bind_for_a_server_brain_calls_fails_before_anything_starts(stack):
    stack.stack_env({"q4": ""}, LLAMACPP_Q4_BIND="127.0.0.1")
    code, out = stack.json("start", timeout=120)
    assert code == 3, out
    assert [p["subject"] for p in out["problems"]] == ["LLAMACPP_Q4_BIND"]
    assert docker0() in out["problems"][0]["fix"]
    assert stack.containers() == []
    assert not list(stack.logs.glob("llamacpp-*.json"))
