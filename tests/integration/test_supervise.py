"""`kitty-ops supervise`, `restart` and the operator's intent, run as real subprocesses against
fake llama-servers (faults on demand) and the real llama-server with the real model.

Timings are shrunk through the environment (probes every 0.2 s, backoff from 0.2 s), so every
test ends in seconds; every wait has a deadline."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

import pytest

from kitty_ops.exitcodes import Exit, Health
from tests.harness import Project, alive, real_env, wait_until

FAST = {"KITTY_SUPERVISE_PROBE_INTERVAL": 0.2, "KITTY_SUPERVISE_PROBE_TIMEOUT": 0.5,
        "KITTY_SUPERVISE_HANG_PROBES": 3, "KITTY_SUPERVISE_BACKOFF_INITIAL": 0.2,
        "KITTY_SUPERVISE_BACKOFF_MAX": 2, "KITTY_SUPERVISE_MAX_FAILURES": 3, "KITTY_STOP_GRACE": 1}


def intent(project: Project) -> dict[str, str]:
    path = project.logs / "desired.json"
    if not path.exists():
        return {}
    return {k: v["want"] for k, v in json.loads(path.read_text())["components"].items()}


def view(project: Project, name: str = "q4") -> dict:
    try:
        return json.loads((project.logs / "supervisor.json").read_text())["components"][f"llama:{name}"]
    except (OSError, ValueError, KeyError):
        return {}


def status_of(project: Project, name: str = "q4") -> dict:
    code, data = project.json("status", timeout=60)
    return next(s for s in data["servers"] if s["name"] == name)


def pid_of(project: Project, name: str = "q4") -> int | None:
    try:
        return project.record(name)["pid"]
    except (OSError, ValueError, KeyError):
        return None


@contextlib.contextmanager
def supervising(project: Project, *args: str):
    """A supervisor in the background; SIGTERM (stack left running) and a bounded wait at the end.
    Its stderr goes to a file, so a long run never blocks on a full pipe."""
    log = project.root / "supervise.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(project.argv("supervise", *args), cwd=project.root, env=project.env(),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proc.log = log  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def output(proc) -> str:
    return proc.log.read_text()


def wait_state(project: Project, state: str, timeout: float, name: str = "q4") -> bool:
    return wait_until(lambda: view(project, name).get("state") == state, timeout)


# ------------------------------------------------------------------------ 1. operator intent

def test_start_and_stop_write_the_operators_intent(project):
    project.fake_env({"q4": "", "summary": ""})
    assert project.run("start").returncode == 0
    assert intent(project) == {"llama:q4": "up", "llama:summary": "up"}
    assert oct((project.logs / "desired.json").stat().st_mode & 0o777) == "0o600"
    assert project.run("stop", "--only", "q4").returncode == 0
    assert intent(project) == {"llama:q4": "down", "llama:summary": "up"}
    assert project.run("emergency-stop").returncode == 0
    assert intent(project) == {"llama:q4": "down", "llama:summary": "down"}


def test_a_failed_start_wants_nothing_up(project):
    project.fake_env({"q4": "", "summary": "--fake-crash-after 0.2"})
    assert project.run("start").returncode == Exit.FAILED
    assert intent(project) == {}


# ------------------------------------------------------------------------------ 2. supervise

def test_crash_loop_backs_off_then_fails_and_restart_clears_it(project):
    project.fake_env({"q4": "--fake-die-after 1"}, **FAST)
    alerts = project.root / "alerts.txt"
    project.write_env({**_env_values(project), "KITTY_ALERT_COMMAND":
                       f'"{_alert_script(project)} {alerts}"'})
    with supervising(project) as proc:
        assert wait_state(project, "failed", 30), output(proc)
        seen = view(project)
        assert seen["restarts"] == 2 and len(seen["history"]) == 3
        assert all(e["code"] == 3 for e in seen["history"])
        text = output(proc)
        assert "restart in 0.2s" in text and "restart in 0.4s" in text  # the backoff grows
        assert "ops/runbooks/crash-loop.md" in text

        health = project.run("health", timeout=60)
        assert health.returncode == Health.CRITICAL, health.stdout
        assert "q4 failed (crash loop" in health.stdout.splitlines()[0]
        status = status_of(project)
        assert status["state"] == "failed" and status["supervised"] and status["restarts"] == 2
        assert status["crash_history"] == ["exited with status 3"] * 3
        assert not wait_until(lambda: pid_of(project) is not None, 1.0)  # given up: nothing restarted

        assert project.run("restart", "q4").returncode == 0
        assert wait_until(lambda: view(project).get("state") in ("running", "starting"), 10), view(project)
        assert "failed state cleared" in output(proc)
    events = [line.split()[0] for line in alerts.read_text().splitlines()]
    assert events[:3] == ["crash", "restart", "recovery"] and "give-up" in events


def test_a_hung_server_is_restarted_after_the_failed_probes(project):
    project.fake_env({"q4": ""}, **FAST)
    with supervising(project) as proc:
        assert wait_state(project, "running", 20), output(proc)
        hung = pid_of(project)
        os.kill(hung, signal.SIGSTOP)
        assert wait_until(lambda: pid_of(project) not in (None, hung) and view(project).get("state") == "running",
                          20), output(proc)
        assert not alive(hung)
        seen = view(project)
        assert seen["restarts"] == 1 and seen["history"][-1]["what"].startswith("hung: 3 failed /health probes")


def test_a_server_answering_503_loading_is_never_restarted_as_hung(project):
    project.fake_env({"q4": "--fake-loading-after 0.5"}, **FAST)
    with supervising(project) as proc:
        assert wait_until(lambda: pid_of(project) is not None, 20)
        first = pid_of(project)
        time.sleep(3)  # 15 probe intervals, 5 times the hang threshold
        assert pid_of(project) == first and alive(first)
        assert view(project).get("restarts") == 0 and "hung" not in output(proc)


def test_stop_all_is_respected_and_start_all_resumes(project):
    project.fake_env({"q4": "", "summary": ""}, **FAST)
    with supervising(project) as proc:
        assert wait_state(project, "running", 20) and wait_state(project, "running", 5, "summary")
        assert project.run("stop").returncode == 0
        time.sleep(3)  # many ticks, probes and backoffs
        assert pid_of(project) is None and pid_of(project, "summary") is None
        assert view(project)["state"] == "stopped" and view(project)["restarts"] == 0

        assert project.run("start").returncode == 0
        pid = pid_of(project)
        assert wait_state(project, "running", 10), output(proc)
        os.kill(pid, signal.SIGKILL)  # supervised again: the crash is restarted
        assert wait_until(lambda: pid_of(project) not in (None, pid), 10), output(proc)


def test_emergency_stop_is_respected(project):
    project.fake_env({"q4": ""}, **FAST)
    with supervising(project) as proc:
        assert wait_state(project, "running", 20)
        assert project.run("emergency-stop").returncode == 0
        time.sleep(3)
        assert pid_of(project) is None and view(project)["restarts"] == 0, output(proc)


def test_adoption_survives_a_sigkilled_supervisor_and_one_supervisor_per_project(project):
    project.fake_env({"q4": ""}, **FAST)
    assert project.run("start").returncode == 0
    pid = pid_of(project)
    with supervising(project) as first:
        assert wait_state(project, "running", 20), output(first)
        assert pid_of(project) == pid and view(project)["restarts"] == 0  # adopted, not restarted

        second = project.run("supervise", timeout=30)
        assert second.returncode == Exit.BUSY
        assert f"pid {first.pid}" in second.stderr

        first.kill()  # SIGKILL: no clean-up code runs
        first.wait(5)
        time.sleep(0.5)
        assert alive(pid)
        assert status_of(project)["supervised"] is False  # a dead supervisor's file is not believed
    with supervising(project) as again:
        assert wait_until(lambda: view(project).get("state") == "running"
                          and f"adopted pid {pid}" in output(again), 20), output(again)
        assert pid_of(project) == pid
        os.kill(pid, signal.SIGKILL)  # adopted (not its child): noticed through a pidfd
        assert wait_until(lambda: pid_of(project) not in (None, pid) and view(project).get("state") == "running",
                          10), output(again)
        assert "watched by pidfd" in output(again)


@pytest.mark.real_engine
def test_real_llama_server_sigkilled_under_the_supervisor(project):
    real_env(project, {"q4": {}}, **FAST)
    alerts = project.root / "alerts.txt"
    project.write_env({**_env_values(project), "KITTY_ALERT_COMMAND": f'"{_alert_script(project)} {alerts}"',
                       "KITTY_SUPERVISE_PROBE_TIMEOUT": 5})
    with supervising(project) as proc:
        assert wait_state(project, "running", 240), output(proc)
        pid = pid_of(project)
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: pid_of(project) not in (None, pid) and view(project).get("state") == "running",
                          240), output(proc)
        status = status_of(project)
        assert status["state"] == "healthy" and status["restarts"] == 1
        assert status["last_exit"]["signal"] == 9 and status["last_exit"]["what"] == "killed by SIGKILL"
        assert wait_until(lambda: alerts.exists() and "recovery" in alerts.read_text(), 10)
    lines = alerts.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["crash", "restart", "recovery"]
    assert "killed by SIGKILL" in lines[0]


# ------------------------------------------------------------------------------------ helpers

def _env_values(project: Project) -> dict[str, str]:
    values = {}
    for line in project.env_file.read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


def _alert_script(project: Project):
    """An alert command: appends `EVENT COMPONENT DETAIL` to the file given as its argument."""
    script = project.root / "alert.sh"
    script.write_text('#!/bin/sh\nprintf "%s %s %s\\n" "$KITTY_ALERT_EVENT" "$KITTY_ALERT_COMPONENT" '
                      '"$KITTY_ALERT_DETAIL" >> "$1"\n')
    script.chmod(0o755)
    return script
