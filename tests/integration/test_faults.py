"""Fault injection: the CLI run as a real subprocess against the fake llama-server, asserting
what an operator sees -- exit codes, messages, processes alive or gone, PID files, ports.

Every fault comes from tests/fakes/fake_llama_server.py, set per server through
LLAMACPP_<NAME>_EXTRA_ARGS by Project.fake_env.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import psutil
import pytest

from kitty_ops.exitcodes import Exit
from kitty_ops.host.ports import is_free
from tests.harness import FAKE_SERVER, Project, alive, wait_until

CRASH_RUNBOOK = "ops/runbooks/llama-server-crash.md"
SLOW_RUNBOOK = "ops/runbooks/llama-server-slow-load.md"
STALE_RUNBOOK = "ops/runbooks/stale-pid-files.md"
LOCK_RUNBOOK = "ops/runbooks/lock-held.md"


# ------------------------------------------------------------------------------------ helpers

def runtime_files(project: Project) -> list[str]:
    """PID files and identity records left under .logs (logs themselves may stay)."""
    if not project.logs.exists():
        return []
    return sorted(p.name for p in project.logs.iterdir()
                  if p.name.startswith("llamacpp-") and p.suffix in (".pid", ".json"))


def project_servers(project: Project) -> list[int]:
    """Live (non-zombie) fake servers of this project, found by command line, not by records:
    catches orphans whose records were removed or never written."""
    found = []
    model_dir = str(project.models)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if any(str(FAKE_SERVER) == c for c in cmd) and any(model_dir in c for c in cmd):
            if alive(proc.info["pid"]):
                found.append(proc.info["pid"])
    return found


def by_name(data: dict) -> dict[str, dict]:
    return {s["name"]: s for s in data["components"]}


def timed_json(project: Project, *args: str, timeout: float = 120) -> tuple[int, dict, float]:
    started = time.monotonic()
    rc, data = project.json(*args, timeout=timeout)
    return rc, data, time.monotonic() - started


def start_ok(project: Project) -> dict[str, dict]:
    rc, data = project.json("start")
    assert rc == Exit.OK, data
    servers = by_name(data)
    for name, server in servers.items():
        assert server["action"] == "started", server
        assert alive(server["pid"]), name
    return servers


def assert_all_gone(project: Project, pids: list[int], ports: list[int]) -> None:
    assert wait_until(lambda: not any(alive(p) for p in pids), timeout=5), \
        f"still alive: {[p for p in pids if alive(p)]}"
    assert project_servers(project) == []
    assert runtime_files(project) == []
    for port in ports:
        assert wait_until(lambda: is_free("127.0.0.1", port), timeout=3), f"port {port} still busy"


def popen_cli(project: Project, *args: str) -> subprocess.Popen:
    """Project.popen, but with SIGINT handling as in a foreground terminal even when this test
    run itself was started with SIGINT ignored (a background job): Python keeps an inherited
    SIG_IGN, which would make the Ctrl+C test pass or fail depending on how pytest was launched."""
    return subprocess.Popen(project.argv(*args), cwd=project.root, env=project.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def kill_cli(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


# ------------------------------------------------------------------------ 1. crash while loading

def test_crash_while_loading_fails_fast_names_server_and_rolls_back_the_other(project):
    ports = project.fake_env({"f16": "--fake-load-seconds 5", "q4": "--fake-crash-after 0.3"},
                             LLAMACPP_HEALTH_TIMEOUT=60)

    rc, data, elapsed = timed_json(project, "start")

    assert rc == Exit.FAILED, data
    assert elapsed < 20, f"a crash must be reported at once, not at the 60 s deadline ({elapsed:.1f}s)"
    assert data["ok"] is False and data["exit_code"] == Exit.FAILED
    servers = by_name(data)
    q4, f16 = servers["q4"], servers["f16"]
    assert q4["action"] == "failed" and q4["ok"] is False
    assert "exited while loading" in q4["detail"]
    assert any("error loading model" in line for line in q4["log_tail"]), q4["log_tail"]
    assert q4["runbook"] == CRASH_RUNBOOK
    # The healthy-but-slow server this invocation started is stopped again.
    assert f16["action"] == "rolled-back" and f16["ok"] is False
    assert "q4 failed" in f16["detail"]
    assert_all_gone(project, [q4["pid"], f16["pid"]], list(ports.values()))


def test_crash_while_loading_text_output_for_people(project):
    project.fake_env({"q4": "--fake-crash-after 0.3"}, LLAMACPP_HEALTH_TIMEOUT=60)

    started = time.monotonic()
    done = project.run("start")
    elapsed = time.monotonic() - started

    assert done.returncode == Exit.FAILED, (done.stdout, done.stderr)
    assert elapsed < 20
    assert "q4 failed: exited while loading" in done.stderr
    assert "error loading model" in done.stderr
    assert f"runbook: {CRASH_RUNBOOK}" in done.stderr
    assert "all servers healthy" not in done.stderr
    assert project_servers(project) == [] and runtime_files(project) == []


# ------------------------------------------------------------------- 2. slower than the deadline

def test_load_slower_than_deadline_times_out_and_is_stopped(project):
    ports = project.fake_env({"q4": "--fake-load-seconds 30"})

    rc, data, elapsed = timed_json(project, "start", "--timeout", "2")

    assert rc == Exit.FAILED, data
    assert 1.8 <= elapsed < 15, f"expected an exit about the 2 s deadline, took {elapsed:.1f}s"
    q4 = by_name(data)["q4"]
    assert q4["action"] == "failed"
    assert q4["runbook"] == SLOW_RUNBOOK
    assert "not healthy after" in q4["detail"] and "LLAMACPP_HEALTH_TIMEOUT is 2s" in q4["detail"]
    assert any("model loading" in line for line in q4["log_tail"]), q4["log_tail"]
    assert_all_gone(project, [q4["pid"]], [ports["q4"]])


# ------------------------------------------------------------------------- 3. ignoring SIGTERM

@pytest.mark.parametrize("grace_from", ["flag", "env"])
def test_stop_escalates_to_sigkill_after_grace(project, grace_from):
    extra = {"KITTY_STOP_GRACE": 1} if grace_from == "env" else {}
    ports = project.fake_env({"q4": "--fake-ignore-sigterm"}, **extra)
    pid = start_ok(project)["q4"]["pid"]

    args = ("stop", "--grace", "1") if grace_from == "flag" else ("stop",)
    rc, data, elapsed = timed_json(project, *args)

    assert rc == Exit.OK, data
    q4 = by_name(data)["q4"]
    assert q4["action"] == "stopped" and q4["ok"] is True
    assert q4["detail"] == "killed after the grace period"
    assert q4["seconds"] >= 0.9, "SIGKILL must wait for the grace period"
    assert elapsed < 15
    assert_all_gone(project, [pid], [ports["q4"]])


# -------------------------------------------------------------------- 4. port held by a stranger

def test_port_held_by_foreign_process_is_a_config_error_and_nothing_starts(project):
    ports = project.fake_env({"q4": "", "f16": ""})
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", ports["q4"]))
        holder.listen(1)

        rc, data = project.json("validate")
        assert rc == Exit.CONFIG, data
        port_problems = [p for p in data["problems"] if p["subject"] == "LLAMACPP_Q4_PORT"]
        assert len(port_problems) == 1, data["problems"]
        message = port_problems[0]["message"]
        assert str(ports["q4"]) in message
        assert f"pid {os.getpid()}" in message, message
        assert port_problems[0]["severity"] == "error"
        assert not any(p["subject"] == "LLAMACPP_F16_PORT" for p in data["problems"])

        text = project.run("validate")
        assert text.returncode == Exit.CONFIG
        assert str(ports["q4"]) in text.stdout and f"pid {os.getpid()}" in text.stdout

        rc, data = project.json("start")
        assert rc == Exit.CONFIG, data
        assert data["components"] == []
        assert any(p["subject"] == "LLAMACPP_Q4_PORT" for p in data["problems"])
        # Nothing started, not even the server whose port was free.
        assert project_servers(project) == []
        assert runtime_files(project) == []
        assert not (project.logs / "llamacpp-f16.log").exists()
        assert is_free("127.0.0.1", ports["f16"])
    finally:
        holder.close()


# ----------------------------------------------------------- 5. records pointing at a stranger

def _write_record(project: Project, name: str, pid: int, create_time: float, port: int) -> None:
    argv = [str(FAKE_SERVER), "--model", str(project.models / "tiny.gguf"), "--host", "127.0.0.1",
            "--port", str(port), "--alias", f"kitty-{name}"]
    record = {
        "schema": 1, "name": name, "pid": pid, "create_time": create_time, "cmdline": argv,
        "argv": argv, "port": port, "url": f"http://127.0.0.1:{port}",
        "model": str(project.models / "tiny.gguf"), "mmproj": None, "engine_version": "9999",
        "binary": str(FAKE_SERVER), "log": str(project.logs / f"llamacpp-{name}.log"),
        "log_offset": 0, "started_at": time.time() - 1000,
    }
    project.logs.mkdir(parents=True, exist_ok=True)
    (project.logs / f"llamacpp-{name}.json").write_text(json.dumps(record))
    (project.logs / f"llamacpp-{name}.pid").write_text(f"{pid}\n")


def _plant_stale_files(project: Project, ports: dict[str, int], victim: subprocess.Popen) -> None:
    real_start = psutil.Process(victim.pid).create_time()
    # q4: the right PID, a wrong start time (the PID was reused).
    _write_record(project, "q4", victim.pid, real_start - 1000.0, ports["q4"])
    # f16: the right PID and start time, but a command line that is not the server's.
    _write_record(project, "f16", victim.pid, real_start, ports["f16"])
    # summary: a bare PID file, no identity record.
    (project.logs / "llamacpp-summary.pid").write_text(f"{victim.pid}\n")


def test_stale_records_pointing_at_a_foreign_process_are_never_signalled(project):
    ports = project.fake_env({"q4": "", "f16": "", "summary": ""})
    victim = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: alive(victim.pid), timeout=5)

        # stop: nothing signalled, stale files removed, exit 0.
        _plant_stale_files(project, ports, victim)
        rc, data = project.json("stop", "--grace", "1")
        assert rc == Exit.OK, data
        servers = by_name(data)
        for name in ("q4", "f16"):
            assert servers[name]["action"] == "not-running", servers[name]
            assert "stale record removed" in servers[name]["detail"]
            assert servers[name]["runbook"] == STALE_RUNBOOK
        assert servers["summary"]["action"] == "not-running"
        time.sleep(0.2)
        assert alive(victim.pid), "stop signalled a process kitty-ops did not start"
        assert victim.poll() is None
        assert runtime_files(project) == []

        # start: stale files dropped unsignalled, fresh servers started with their own records.
        _plant_stale_files(project, ports, victim)
        done = project.run("start")
        assert done.returncode == Exit.OK, (done.stdout, done.stderr)
        assert "removed stale PID files" in done.stderr
        assert "no identity record" in done.stderr
        time.sleep(0.2)
        assert alive(victim.pid), "start signalled a process kitty-ops did not start"
        assert victim.poll() is None
        for name in ("q4", "f16", "summary"):
            record = project.record(name)
            assert record["pid"] != victim.pid
            assert alive(record["pid"])
        pids = project.recorded_pids()

        rc, data = project.json("stop", "--grace", "1")
        assert rc == Exit.OK, data
        assert alive(victim.pid)
        assert_all_gone(project, pids, list(ports.values()))
    finally:
        victim.kill()
        victim.wait(timeout=10)


# ------------------------------------------------------------------------ 6. Ctrl+C during start

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_during_start_stops_everything_it_started(project, sig):
    ports = project.fake_env({"q4": "--fake-load-seconds 30", "f16": "--fake-load-seconds 30"},
                             LLAMACPP_HEALTH_TIMEOUT=60)
    cli = popen_cli(project, "start")
    try:
        assert wait_until(lambda: len(project.recorded_pids()) == 2, timeout=30), \
            f"servers never recorded: {runtime_files(project)}"
        pids = project.recorded_pids()
        assert all(alive(p) for p in pids)
        time.sleep(0.5)  # let the CLI settle into its health wait
        started = time.monotonic()
        cli.send_signal(sig)
        out, err = cli.communicate(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        kill_cli(cli)

    assert cli.returncode == Exit.INTERRUPTED, (out, err)
    assert "interrupted" in err
    assert elapsed < 20
    assert_all_gone(project, pids, list(ports.values()))


def _full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is already full: the next write to it blocks until the reader drains."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    for chunk in (b"x" * 4096, b"x"):
        try:
            while True:
                os.write(write_fd, chunk)
        except BlockingIOError:
            pass
    os.set_blocking(write_fd, True)
    return read_fd, write_fd


def test_interrupt_right_after_a_spawn_still_stops_that_server(project):
    """Ctrl+C that lands between spawning a server and registering it for roll-back.

    The CLI's stderr is a full pipe (an operator's paused terminal -- Ctrl+S -- or a stalled
    `2>&1 | less` does the same), so its first progress line, written in lifecycle._spawn after
    the record is saved but before start() appends the launch to `spawned`, blocks. SIGINT then
    interrupts that write: deterministically the window that any signal can hit by chance."""
    ports = project.fake_env({"q4": "--fake-load-seconds 30"}, LLAMACPP_HEALTH_TIMEOUT=60)
    read_fd, write_fd = _full_pipe()
    drained: list[bytes] = []
    try:
        cli = subprocess.Popen(project.argv("start"), cwd=project.root, env=project.env(),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=write_fd,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        os.close(write_fd)
        write_fd = -1
        try:
            assert wait_until(lambda: len(project.recorded_pids()) == 1, timeout=30), \
                "the server was never recorded (did the CLI write to stderr before spawning?)"
            pid = project.recorded_pids()[0]
            time.sleep(0.5)  # the CLI is now blocked writing "started pid ..." to stderr
            cli.send_signal(signal.SIGINT)

            def drain() -> None:
                while chunk := os.read(read_fd, 65536):
                    drained.append(chunk)

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            rc = cli.wait(timeout=60)
            reader.join(timeout=10)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait(timeout=30)
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        os.close(read_fd)

    err = b"".join(drained).decode(errors="replace").lstrip("x")
    assert rc == Exit.INTERRUPTED, err
    assert "interrupted" in err
    assert wait_until(lambda: not alive(pid), timeout=5), (
        f"kitty-ops start exited {rc} saying servers it started were stopped, but q4 (pid {pid}) "
        f"is still running and holds port {ports['q4']}")
    assert_all_gone(project, [pid], list(ports.values()))


# ----------------------------------------------------------------------------- 7. idempotency

def test_second_start_reports_already_running_and_keeps_pids(project):
    project.fake_env({"q4": "", "f16": ""})
    first = start_ok(project)

    rc, data = project.json("start")

    assert rc == Exit.OK, data
    second = by_name(data)
    for name in ("q4", "f16"):
        assert second[name]["action"] == "already-running", second[name]
        assert second[name]["pid"] == first[name]["pid"]
        assert project.record(name)["pid"] == first[name]["pid"]
        assert alive(first[name]["pid"])
    assert sorted(project_servers(project)) == sorted(s["pid"] for s in first.values())


# ------------------------------------------------------------------------------------- 8. lock

def test_concurrent_start_is_busy_and_names_the_lock(project):
    ports = project.fake_env({"q4": "--fake-load-seconds 8"}, KITTY_LOCK_TIMEOUT=0.5)
    first = popen_cli(project, "start")
    try:
        assert wait_until(lambda: len(project.recorded_pids()) == 1, timeout=30)
        pid = project.recorded_pids()[0]

        started = time.monotonic()
        done = project.run("start", "--json")
        elapsed = time.monotonic() - started
        assert first.poll() is None, "the first start must still be waiting (test timing)"

        assert done.returncode == Exit.BUSY, (done.stdout, done.stderr)
        data = json.loads(done.stdout)
        assert data["exit_code"] == Exit.BUSY and data["ok"] is False
        assert "kitty-ops.lock" in data["message"]
        assert "kitty-ops start" in data["message"], "the message should name the holder"
        assert LOCK_RUNBOOK in data["message"]
        assert "kitty-ops.lock" in done.stderr
        assert elapsed < 8
        assert alive(pid), "a busy start must not touch the running one"

        out, err = first.communicate(timeout=60)
        assert first.returncode == Exit.OK, (out, err)
    finally:
        kill_cli(first)

    rc, data = project.json("stop", "--grace", "1")
    assert rc == Exit.OK, data
    assert by_name(data)["q4"]["action"] == "stopped"
    assert_all_gone(project, [pid], [ports["q4"]])


# ------------------------------------------------------------------------ 9. the process group

def test_stop_kills_the_whole_process_group(project):
    ports = project.fake_env({"q4": "--fake-child"})
    pid = start_ok(project)["q4"]["pid"]

    assert wait_until(lambda: bool(psutil.Process(pid).children()), timeout=10)
    child = psutil.Process(pid).children()[0].pid
    assert os.getpgid(child) == pid, "the fake's child should share the server's process group"

    rc, data = project.json("stop")

    assert rc == Exit.OK, data
    assert by_name(data)["q4"]["action"] == "stopped"
    assert wait_until(lambda: not alive(child), timeout=5), "the server's child survived stop"
    assert_all_gone(project, [pid, child], [ports["q4"]])


# --------------------------------------------------------------------- 10. stop in parallel

def test_stop_signals_all_servers_concurrently(project):
    names = ["q4", "f16", "summary", "extra"]
    ports = project.fake_env({n: "--fake-exit-delay 1.5" for n in names})
    servers = start_ok(project)
    assert sorted(servers) == sorted(names)

    rc, data, elapsed = timed_json(project, "stop")

    assert rc == Exit.OK, data
    stopped = by_name(data)
    for name in names:
        assert stopped[name]["action"] == "stopped", stopped[name]
        assert stopped[name]["detail"] == "stopped", "graceful exit expected (grace 3 s > 1.5 s)"
        assert stopped[name]["seconds"] >= 1.4, "the fake's exit delay should have been waited for"
    assert elapsed < 4, f"4 servers x 1.5 s exit delay must be stopped in parallel ({elapsed:.1f}s)"
    assert_all_gone(project, [s["pid"] for s in servers.values()], list(ports.values()))
