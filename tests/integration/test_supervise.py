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
import sys
import time
import urllib.request

import pytest

from kitty_ops.exitcodes import Exit, Health
from tests.harness import Project, alive, docker, free_port, real_env, wait_until

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
    return next(c for c in data["components"] if (c["tier"], c["name"]) == ("llama", name))


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
    metrics_port = free_port()
    project.fake_env({"q4": ""}, **FAST, KITTY_METRICS_PORT=metrics_port)
    with supervising(project) as proc:
        assert wait_state(project, "running", 20), output(proc)
        hung = pid_of(project)
        os.kill(hung, signal.SIGSTOP)
        assert wait_until(lambda: pid_of(project) not in (None, hung) and view(project).get("state") == "running",
                          20), output(proc)
        assert not alive(hung)
        seen = view(project)
        assert seen["restarts"] == 1 and seen["history"][-1]["what"].startswith("hung: 3 failed /health probes")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        assert 'kitty_supervised_restarts_total{component="q4",tier="llama"} 1.0' in text
        assert 'kitty_supervised_up{component="q4",tier="llama"} 1.0' in text


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
        time.sleep(10)  # 50 ticks, 50 probe intervals, many backoffs: nothing comes back
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
                          and f"watching pid {pid}: adopted" in output(again), 20), output(again)
        assert pid_of(project) == pid
        os.kill(pid, signal.SIGKILL)  # adopted (not its child): noticed through a pidfd
        assert wait_until(lambda: pid_of(project) not in (None, pid) and view(project).get("state") == "running",
                          10), output(again)
        assert "watched by pidfd" in output(again)


FLAKY = """services:
  flaky:
    image: {image}
    restart: unless-stopped
    command: ["sh", "-c", "trap 'exit 0' TERM; while [ ! -e /tmp/die-once ] && [ ! -e /tmp/die-always ]; do sleep 0.1; done; rm -f /tmp/die-once; exit 3"]
"""


@pytest.mark.docker
def test_containers_restarted_by_the_engine_are_counted_and_a_crash_loop_reported(project, docker_image):
    compose_file = project.root / "compose.yml"
    compose_file.write_text(FLAKY.format(image=docker_image))
    name = f"ks{os.getpid()}{project.root.name[-10:]}".lower().replace("_", "")
    project.fake_env({"q4": ""}, **FAST, KITTY_COMPOSE_ENABLED="true", KITTY_COMPOSE_FILE=compose_file,
                     KITTY_COMPOSE_PROJECT=name, KITTY_COMPOSE_TIMEOUT=60, KITTY_COMPOSE_STOP_TIMEOUT=1,
                     OBJECT_STORE_SECRET_KEY="test-only-objects")
    container = f"{name}-flaky-1"

    def flaky() -> dict:
        try:
            return json.loads((project.logs / "supervisor.json").read_text())["components"]["compose:flaky"]
        except (OSError, ValueError, KeyError):
            return {}

    try:
        with supervising(project) as proc:
            assert wait_state(project, "running", 120), output(proc)
            time.sleep(1)  # the event stream is up
            assert docker("exec", container, "touch", "/tmp/die-once").returncode == 0
            assert wait_until(lambda: flaky().get("restarts") == 1 and flaky().get("state") == "running", 30), \
                (flaky(), output(proc))
            assert flaky()["history"][-1]["code"] == 3
            assert docker("inspect", "-f", "{{.RestartCount}}", container).stdout.strip() == "1"  # the engine did it

            assert docker("exec", container, "touch", "/tmp/die-always").returncode == 0
            assert wait_until(lambda: flaky().get("state") == "failed", 60), (flaky(), output(proc))
            assert "kitty-ops does not fight it" in flaky()["detail"]
            health = project.run("health", timeout=60)
            assert health.returncode == Health.CRITICAL and "flaky failed (crash loop" in health.stdout, health.stdout
    finally:
        project.run("stop", timeout=120)
        subprocess.run(["docker", "compose", "-p", name, "-f", str(compose_file), "down", "--timeout", "1"],
                       capture_output=True, timeout=120)


def test_log_rotation_under_a_writer_loses_and_repeats_no_line(tmp_path):
    """The rotation itself against a process writing as fast as it can (O_APPEND, unbuffered)."""
    from kitty_ops.host import procs
    from kitty_ops.supervise import logs
    log = tmp_path / "llamacpp-x.log"
    with open(log, "ab", buffering=0) as out:
        writer = subprocess.Popen([sys.executable, "-u", "-c", "import itertools, sys\nfor i in itertools.count():"
                                   "\n    sys.stdout.write(f'line {i:09d} ' + 'x' * 60 + '\\n')"],
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    identity = procs.identity_after_spawn(writer)
    pauses = []
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            time.sleep(0.05)
            done = logs.rotate(log, 1000, identity)
            assert done is not None
            pauses.append(done.paused_ms)
    finally:
        writer.kill()
        writer.wait(5)
    assert len(pauses) >= 10 and sorted(pauses)[len(pauses) // 2] < 50
    numbers = _numbers_across_generations(log, "line")
    assert len(numbers) > 1000 and numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert numbers[0] == 0


def test_the_supervisor_rotates_a_servers_log(project):
    project.fake_env({"q4": "--fake-chatty 2000"}, **FAST, KITTY_LOG_MAX_MB=0.05, KITTY_LOG_KEEP=1000,
                     KITTY_LOG_CHECK_INTERVAL=0.2)
    with supervising(project) as proc:
        log = project.logs / "llamacpp-q4.log"
        assert wait_until(lambda: len(list(project.logs.glob("llamacpp-q4.log.*.gz"))) >= 3, 30), output(proc)
        assert view(project)["restarts"] == 0  # the pauses never looked like a hang
        assert project.run("stop").returncode == 0
    numbers = _numbers_across_generations(log, "chatty")
    assert len(numbers) > 500 and numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert "rotated llamacpp-q4.log" in output(proc)


def _numbers_across_generations(log, word: str) -> list[int]:
    import gzip
    gens = sorted(log.parent.glob(log.name + ".*.gz"), key=lambda p: -int(p.name.rsplit(".", 2)[1]))
    data = b"".join(gzip.open(g).read() for g in gens) + log.read_bytes()
    lines = [l for l in data.decode(errors="replace").splitlines() if l.startswith(word + " ")]
    complete = [l for l in lines if len(l.split()) == 3]  # the writer may be killed mid-line
    return [int(l.split()[1]) for l in complete]


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
        assert (status["state"], status["health"]) == ("running", "healthy") and status["restarts"] == 1
        assert status["last_exit"] == "killed by SIGKILL"  # signal 9, in the supervisor's words
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
