"""`kitty-ops doctor` / `start-all.sh --preflight`: ready on a healthy machine, and exit 1 naming
the row and its runbook for each required check that is broken."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from kitty_ops.rescue import doctor
from tests.harness import REPO


def rows(done: subprocess.CompletedProcess) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(done.stdout)["checks"]}


def test_a_healthy_machine_is_ready_and_preflight_starts_nothing(project):
    project.fake_env({"q4": ""})
    project.env_file.chmod(0o600)
    done = project.run("doctor", "--json")
    checks = rows(done)
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["ok"] is True
    for name in ("python", "configuration", "llama-server binary", "model files", "ports free", ".env permissions"):
        assert (checks[name]["required"], checks[name]["status"]) == (True, "ok"), name
    assert checks["llama-server binary"]["detail"].endswith("(9999 (fake, commit 0000000))")
    assert checks["accelerator"]["required"] is False and checks["accelerator"]["status"] in ("ok", "warn")
    assert checks["start order"]["detail"] == "[llama:q4]"
    assert checks["docker CLI"]["required"] is False  # the container tier is disabled here

    preflight = subprocess.run([str(REPO / "ops" / "scripts" / "start-all.sh"), "--preflight", "--env-file",
                                str(project.env_file)], capture_output=True, text=True, env=project.env(), timeout=60)
    assert preflight.returncode == 0 and "ready to start" in preflight.stdout
    assert not list(project.logs.glob("llamacpp-*.pid"))  # nothing was started


def _listening_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("broken, row, runbook", [
    ("world-readable env", ".env permissions", "configuration"),
    ("no engine", "llama-server binary", "llama-server-binary"),
    ("no model", "model files", "model-files"),
    ("port taken", "ports free", "port-conflict"),
    ("bad setting", "configuration", "configuration"),
    ("no docker daemon", "docker daemon", "docker-engine"),
    ("no docker CLI", "docker CLI", "docker-engine"),
    ("no compose file", "compose file", "compose-file"),
])
def test_each_broken_required_check_fails_the_doctor(project, broken, row, runbook):
    holder = _listening_port() if broken == "port taken" else None
    extra: dict[str, object] = {}
    if broken == "no engine":
        extra["LLAMACPP_SERVER_BIN"] = "/nonexistent/llama-server"
    elif broken == "no model":
        extra["LLAMACPP_Q4_MODEL"] = "missing.gguf"
    elif broken == "bad setting":
        extra["LLAMACPP_Q4_CTX"] = "lots"
    elif broken in ("no docker daemon", "no docker CLI"):
        extra["KITTY_COMPOSE_ENABLED"] = "true"
    elif broken == "no compose file":
        extra.update(KITTY_COMPOSE_ENABLED="true", KITTY_COMPOSE_FILE="/nonexistent/compose.yml")
    ports = project.fake_env({"q4": ""}, **extra)
    if holder is not None:
        text = project.env_file.read_text().replace(f"LLAMACPP_Q4_PORT={ports['q4']}",
                                                    f"LLAMACPP_Q4_PORT={holder.getsockname()[1]}")
        project.env_file.write_text(text)
    project.env_file.chmod(0o644 if broken == "world-readable env" else 0o600)
    env = project.env()
    if broken == "no docker daemon":
        env["DOCKER_HOST"] = f"unix://{project.root}/no-such-docker.sock"
    if broken == "no docker CLI":
        env["PATH"] = str(project.root / "empty-bin")  # the fake engine's python3 is gone too: fine
    try:
        done = subprocess.run(project.argv("doctor", "--json"), cwd=project.root, env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
        text = subprocess.run(project.argv("doctor"), cwd=project.root, env=env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL).stdout
    finally:
        if holder is not None:
            holder.close()
    checks = rows(done)
    assert done.returncode == 1, done.stdout
    assert (checks[row]["required"], checks[row]["status"]) == (True, "fail"), checks[row]
    assert checks[row]["runbook"] == f"ops/runbooks/{runbook}.md"
    verdict = text.strip().splitlines()[-1]
    assert verdict.startswith("not ready: ") and row in verdict, verdict


def test_an_old_python_fails_the_python_check(monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 9, 18, "final", 0))
    check = doctor._python()
    assert (check.required, check.status) == (True, "fail") and "needs 3.10+" in check.detail
