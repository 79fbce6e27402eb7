"""`kitty-ops health` (health-check.sh) against running servers, the way cron runs it: a
subprocess with no terminal, judged by its exit code, its first stdout line, its JSON and the
Prometheus file it leaves.

Faults a real llama-server cannot show on demand use the fake one: a load that lasts, a process
killed behind kitty-ops's back, a PID reused by another program. The real server shows the rest
(test_real_engine.py has its loading, healthy and hung states); the container tier is checked
against the real Docker engine in test_stack.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.harness import alive, free_port, wait_until

FAKE_SERVICE = Path(__file__).resolve().parents[1] / "fakes" / "fake_service.py"


def health(project, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return project.run("health", *args, timeout=timeout)


def health_json(project, *args: str) -> tuple[int, dict]:
    done = health(project, "--json", *args)
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (rc={done.returncode}): {done.stdout!r} {done.stderr!r}")


def by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["components"]}


def start(project) -> dict[str, int]:
    code, out = project.json("start", timeout=120)
    assert code == 0, out
    return {c["name"]: c["pid"] for c in out["components"]}


def suspend(pid: int):
    """SIGSTOP: the process lives and its socket still accepts connections (the kernel completes
    the handshake), but nothing ever answers: a black hole, the way a hung server looks."""
    os.kill(pid, signal.SIGSTOP)


def test_healthy_servers_exit_0_with_a_plugin_status_line_and_quiet_prints_nothing(project):
    # vision is configured but disabled, and never started: not a component, not a failure.
    project.fake_env({"q4": "", "f16": ""}, LLAMACPP_SERVERS="q4,f16,vision", LLAMACPP_VISION_ENABLED="false")
    start(project)
    done = health(project)
    assert done.returncode == 0, done.stdout + done.stderr
    first = done.stdout.splitlines()[0]
    assert re.match(r"^KITTY OK - 2/2 healthy \| 'q4_latency'=[0-9.]+s;;2;0; 'f16_latency'=[0-9.]+s;;2;0; "
                    r"'check_time'=[0-9.]+s;;10;0;$", first), first
    assert re.search(r"^q4\s+llama\s+OK\s+healthy", done.stdout, re.M)

    quiet = health(project, "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_loading_server_is_warning_exit_1(project):
    project.fake_env({"q4": "--fake-load-seconds 60"})
    starting = project.popen("start")
    try:
        assert wait_until(lambda: health(project).returncode == 1, 20, 0.1), "never WARNING while loading"
        code, report = health_json(project)
        assert (code, report["status"]) == (1, "WARNING")
        q4 = by_name(report)["q4"]
        assert (q4["level"], q4["status"]) == ("WARNING", "loading")
        assert "503" in q4["detail"]
        assert health(project, "--quiet").stdout.startswith("KITTY WARNING - 0/1 healthy; warning: q4 loading")
    finally:
        starting.send_signal(signal.SIGINT)  # the start rolls back what it started
        starting.communicate(timeout=60)


def test_dead_process_with_stale_record_is_critical_with_reason_and_log_lines(project):
    project.fake_env({"q4": "", "f16": ""})
    pids = start(project)
    os.kill(pids["f16"], signal.SIGKILL)
    assert wait_until(lambda: not alive(pids["f16"]), 10)

    code, report = health_json(project)
    assert (code, report["status"]) == (2, "CRITICAL")
    f16, q4 = by_name(report)["f16"], by_name(report)["q4"]
    assert q4["level"] == "OK"  # one dead server does not hide the healthy one
    assert (f16["level"], f16["status"]) == ("CRITICAL", "down")
    assert f"pid {pids['f16']} is gone" in f16["detail"]
    log_lines = (project.logs / "llamacpp-f16.log").read_text().splitlines()
    assert f16["log_tail"] == log_lines[-len(f16["log_tail"]):] and f16["log_tail"]
    assert f16["detail"].endswith(log_lines[-1].strip())
    assert f16["runbook"] == "ops/runbooks/llama-server-crash.md"
    assert f16["pid"] == pids["f16"]

    # Health only reads: the stale record is still there for `status` and `stop` to deal with.
    assert (project.logs / "llamacpp-f16.json").exists() and (project.logs / "llamacpp-f16.pid").exists()
    # --quiet is quiet only when all is well.
    loud = health(project, "--quiet")
    assert loud.returncode == 2 and loud.stdout.startswith("KITTY CRITICAL - 1/2 healthy; critical: f16 down")


def test_reused_pid_is_critical_and_the_stranger_is_left_alone(project):
    project.fake_env({"q4": ""})
    pid = start(project)["q4"]
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        # The record now names a live process kitty-ops did not start (as after a PID reuse).
        record = json.loads((project.logs / "llamacpp-q4.json").read_text())
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not alive(pid), 10)
        record["pid"] = stranger.pid
        (project.logs / "llamacpp-q4.json").write_text(json.dumps(record))

        code, report = health_json(project)
        q4 = by_name(report)["q4"]
        assert code == 2 and q4["level"] == "CRITICAL"
        assert f"pid {stranger.pid} now belongs to another process" in q4["detail"]
        assert q4["runbook"] == "ops/runbooks/stale-pid-files.md"
        assert stranger.poll() is None  # not signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_black_holed_endpoint_is_critical_within_the_probe_timeout(project):
    project.fake_env({"q4": "", "f16": ""})
    pids = start(project)
    suspend(pids["q4"])
    try:
        began = time.monotonic()
        done = health(project, "--json", "--timeout", "1")
        elapsed = time.monotonic() - began
        report = json.loads(done.stdout)
        q4, f16 = by_name(report)["q4"], by_name(report)["f16"]
        assert done.returncode == 2
        assert q4["level"] == "CRITICAL" and "timed out" in q4["detail"] and "suspended" in q4["detail"]
        assert 0.9 <= q4["latency"] < 1.5
        assert f16["level"] == "OK" and f16["latency"] < 0.5  # probed at the same time, not after q4
        assert elapsed < 1 + 2.0, f"took {elapsed:.2f}s with a 1s probe timeout"
    finally:
        os.kill(pids["q4"], signal.SIGCONT)


def test_own_deadline_is_unknown_exit_3_and_ends_on_time(project):
    project.fake_env({"q4": ""})
    pid = start(project)["q4"]
    suspend(pid)
    try:
        began = time.monotonic()
        done = health(project, "--timeout", "20", "--deadline", "1")
        elapsed = time.monotonic() - began
        assert done.returncode == 3, done.stdout
        assert done.stdout.startswith("KITTY UNKNOWN - 0/1 healthy; unknown: q4 unknown")
        assert "deadline" in done.stdout
        assert elapsed < 1 + 2.0, f"took {elapsed:.2f}s with a 1s deadline"
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_run_while_the_previous_one_runs_exits_3_at_once(project):
    project.fake_env({"q4": ""})
    pid = start(project)["q4"]
    suspend(pid)
    try:
        first = project.popen("health", "--timeout", "4")
        lock_file = project.logs / "health.lock"
        assert wait_until(lambda: lock_file.exists() and f"pid {first.pid}" in lock_file.read_text(), 10)
        began = time.monotonic()
        second = health(project)
        elapsed = time.monotonic() - began
        assert second.returncode == 3
        assert second.stdout.startswith("KITTY UNKNOWN - ")
        assert f"a previous health check is still running (pid {first.pid}: kitty-ops health)" in second.stdout
        assert elapsed < 1.5, f"the second run waited {elapsed:.2f}s"
        out, _ = first.communicate(timeout=30)
        assert first.returncode == 2 and out.startswith("KITTY CRITICAL")
    finally:
        os.kill(pid, signal.SIGCONT)
    # The lock went with the first run: the next one runs normally.
    assert health(project).returncode == 0


def test_bad_arguments_and_missing_env_file_are_unknown_not_critical(project):
    project.fake_env({"q4": ""})
    for args in (["--timeout", "soon"], ["--no-such-flag"], ["--timeout", "0"]):
        done = health(project, *args)
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert done.stdout.startswith("KITTY UNKNOWN - bad arguments"), done.stdout
    missing = health(project, "--env-file", str(project.root / "nope.env"))
    assert missing.returncode == 3
    assert missing.stdout.startswith("KITTY UNKNOWN - env file not found") and "nope.env" in missing.stdout
    project.fake_env({"q4": ""}, KITTY_HEALTH_DEADLINE="forever")
    bad_setting = health(project)
    assert bad_setting.returncode == 3
    assert bad_setting.stdout.startswith("KITTY UNKNOWN - KITTY_HEALTH_DEADLINE: KITTY_HEALTH_DEADLINE='forever'")
    assert "ops/runbooks/configuration.md" in bad_setting.stdout


def test_prometheus_file_is_written_atomically_and_parses(project):
    project.fake_env({"q4": "", "f16": ""})
    pids = start(project)
    metrics_dir = project.root / "textfile"
    metrics_dir.mkdir()
    target = metrics_dir / "kitty.prom"
    target.write_text("# an older file\n")
    old_inode = target.stat().st_ino

    assert health(project, "--quiet", "--prometheus", str(target)).returncode == 0
    assert target.stat().st_ino != old_inode  # replaced by rename, never rewritten in place
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in metrics_dir.iterdir()) == ["kitty.prom"]  # no temp file left
    families = {f.name: f for f in text_string_to_metric_families(target.read_text())}
    up = {s.labels["component"]: s.value for s in families["kitty_component_up"].samples}
    assert up == {"q4": 1.0, "f16": 1.0}
    assert families["kitty_health_status"].samples[0].value == 0

    os.kill(pids["f16"], signal.SIGKILL)
    assert wait_until(lambda: not alive(pids["f16"]), 10)
    assert health(project, "--quiet", "--prometheus", str(target)).returncode == 2
    families = {f.name: f for f in text_string_to_metric_families(target.read_text())}
    assert {s.labels["component"]: s.value for s in families["kitty_component_up"].samples} == {"q4": 1.0, "f16": 0.0}
    assert families["kitty_health_status"].samples[0].value == 2

    # A file that cannot be written is the check's own failure, and says which file.
    (project.root / "a-file").write_text("not a directory\n")
    blocked = health(project, "--prometheus", str(project.root / "a-file" / "kitty.prom"))
    assert blocked.returncode == 2  # CRITICAL (f16 is dead) outranks UNKNOWN
    assert "cannot write" in blocked.stdout.splitlines()[0]


def test_native_services_worker_by_liveness_api_by_health(project):
    py = sys.executable
    api_port = free_port()
    project.fake_env({"q4": ""}, IMAGES_SERVICE_ENABLED="true", IMAGES_SERVICE_PORT=api_port,
                     IMAGES_SERVICE_WORKER_CMD=f'"{py} {FAKE_SERVICE} --name worker"',
                     IMAGES_SERVICE_API_CMD=f'"{py} {FAKE_SERVICE} --name api --port {{port}}"',
                     IMAGES_SERVICE_WORKER_SETTLE="0.3")
    pids = start(project)
    code, report = health_json(project)
    parts = by_name(report)
    assert code == 0, report
    assert set(parts) == {"q4", "images-worker", "images-api"}
    assert parts["images-api"]["url"] == f"http://127.0.0.1:{api_port}/health"
    assert parts["images-api"]["dependencies"] == {"images-worker": "healthy"}
    assert "no health endpoint" in parts["images-worker"]["detail"]

    os.kill(pids["images-worker"], signal.SIGKILL)
    assert wait_until(lambda: not alive(pids["images-worker"]), 10)
    code, report = health_json(project)
    parts = by_name(report)
    assert code == 2
    assert (parts["images-worker"]["level"], parts["images-worker"]["status"]) == ("CRITICAL", "down")
    assert parts["images-worker"]["runbook"] == "ops/runbooks/native-service-failed.md"
    assert parts["images-api"]["dependencies"] == {"images-worker": "down"}

