"""emergency-stop.sh against a stack that does not want to stop: a llama server that ignores
SIGTERM and a container that ignores SIGTERM, next to an unrelated process and an unrelated
container that must survive. Once through kitty-ops, once through the pure-bash fallback (a
broken Python environment)."""

from __future__ import annotations

import subprocess
import time

import pytest

from kitty_ops.host import ports
from tests.harness import REPO, alive, bystander, docker, wait_until

pytestmark = pytest.mark.docker

SCRIPT = REPO / "ops" / "scripts" / "emergency-stop.sh"
STUBBORN = """services:
  stubborn:
    image: ${KITTY_TEST_IMAGE:?}
    entrypoint: ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]
    healthcheck: {test: ["CMD", "true"], interval: 500ms, timeout: 3s, retries: 60, start_period: 0s}
"""


def stubborn_stack(stack) -> dict[str, int]:
    stack.add_override(STUBBORN)
    found = stack.stack_env({"q4": "--fake-ignore-sigterm", "f16": ""}, profiles="",
                            KITTY_LOGS_DIR=stack.logs)
    assert stack.run("start", timeout=180).returncode == 0
    return found


def emergency(stack, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    done = subprocess.run([str(SCRIPT), "--env-file", str(stack.env_file)], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env={**stack.env(), **env})
    return done, time.monotonic() - began


def assert_stack_gone_and_bystanders_alive(stack, pids: list[int], found: dict[str, int], stranger, other: str):
    assert wait_until(lambda: not any(alive(pid) for pid in pids), 5), "a llama server survived"
    assert not list(stack.logs.glob("llamacpp-*.pid")) and not list(stack.logs.glob("llamacpp-*.json"))
    assert stack.containers() == []  # running or stopped: none of the project is left
    assert stranger.poll() is None, "an unrelated process was killed"
    assert docker("inspect", "--format", "{{.State.Running}}", other).stdout.strip() == "true"
    for var in ("POSTGRES_PORT", "REDIS_PORT"):
        assert ports.is_free("127.0.0.1", found[var]), var
    volumes = docker("volume", "ls", "--filter", f"label=com.docker.compose.project={stack.compose_project}",
                     "--format", "{{.Name}}").stdout.split()
    assert f"{stack.compose_project}_postgres-data" in volumes  # SIGKILL, but the data is kept


def test_emergency_stop_kills_the_stubborn_stack_and_nothing_else(stack):
    found = stubborn_stack(stack)
    pids = [stack.record(n)["pid"] for n in ("q4", "f16")]
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        with bystander(stack) as other:
            done, elapsed = emergency(stack)
            assert done.returncode == 0, done.stdout + done.stderr
            assert elapsed < 15, f"{elapsed:.1f}s"  # a SIGTERM-ignoring container alone costs 10 s with stop
            assert "llamacpp-q4" in done.stdout and "killed" in done.stdout
            assert f"{stack.compose_project}-stubborn-1" in done.stdout and "removed" in done.stdout
            assert "fallback" not in done.stderr
            assert_stack_gone_and_bystanders_alive(stack, pids, found, stranger, other)
    finally:
        stranger.kill()
        stranger.wait()


def test_with_python_broken_the_bash_fallback_does_the_same(stack, tmp_path):
    found = stubborn_stack(stack)
    pids = [stack.record(n)["pid"] for n in ("q4", "f16")]
    broken = tmp_path / "kitty-ops"
    broken.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named click' >&2\nexit 1\n")
    broken.chmod(0o755)
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        with bystander(stack) as other:
            done, elapsed = emergency(stack, KITTY_OPS_BIN=str(broken))
            assert done.returncode == 0, done.stdout + done.stderr
            assert "running the bash fallback" in done.stderr
            assert elapsed < 15, f"{elapsed:.1f}s"
            assert "llamacpp-q4  killed" in done.stdout and "llamacpp-f16  killed" in done.stdout
            assert_stack_gone_and_bystanders_alive(stack, pids, found, stranger, other)
    finally:
        stranger.kill()
        stranger.wait()


def test_a_recorded_pid_that_is_no_longer_ours_is_left_alone_by_both_paths(stack, tmp_path):
    stack.stack_env({"q4": ""}, profiles="", KITTY_LOGS_DIR=stack.logs, KITTY_COMPOSE_ENABLED="false")
    assert stack.run("start", timeout=60).returncode == 0
    record = stack.logs / "llamacpp-q4.json"
    original = record.read_text()
    pid = stack.record("q4")["pid"]
    assert stack.run("stop", timeout=60).returncode == 0
    stranger = subprocess.Popen(["sleep", "300"])
    broken = tmp_path / "kitty-ops"
    broken.write_text("#!/bin/sh\nexit 1\n")
    broken.chmod(0o755)
    try:
        for env in ({}, {"KITTY_OPS_BIN": str(broken)}):
            # The record now points at a live process kitty-ops did not start (a reused PID).
            record.write_text(original.replace(f'"pid": {pid},', f'"pid": {stranger.pid},'))
            done, _ = emergency(stack, **env)
            assert stranger.poll() is None, f"killed a stranger ({env or 'kitty-ops path'})"
            assert "left alone" in done.stdout
            assert not record.exists()  # the stale record is cleaned up, unsignalled
    finally:
        stranger.kill()
        stranger.wait()
