#!/usr/bin/env python3
"""`kitty-ops supervise`, measured (issue 16, section 5), all in one run:

  A. crash-to-detect latency, p50/p95 over --crashes crashes each: the supervisor's own child
     (waitpid), an adopted process (not our child) through a pidfd, and through the poll
     fallback (KITTY_SUPERVISE_POLL, 50 ms). Targets: child <= 20 ms, adopted <= 100 ms.
     The watchers are kitty_ops.supervise.watch, the code the supervisor runs, in-process.
  B. crash-to-healthy at a restart minus the server's own load time (its spawn, the record's
     started_at, to its ready file), a fake server SIGKILLed under `kitty-ops supervise` (the CLI, a real
     subprocess) with KITTY_SUPERVISE_BACKOFF_INITIAL=0 so that the figure is the supervisor's
     own overhead; the configured backoff (1 s by default) adds to it. Target <= 0.3 s.
  C. the same fake server under supervisord (if `supervisord` is installed: PyPI `supervisor`,
     autorestart=true, startsecs=0): its time from the kill to RUNNING (which does not wait for
     health) and to the server's own readiness, beside B.
  D. the supervisor's own cost while idle with 4 servers (default probe interval, 5 s): CPU
     seconds per minute and RSS. Target: under 1 % of a core.

Timing never fails the run (exit 0); a crash of the benchmark itself does.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from pathlib import Path

import psutil
from common import FAKE_SERVER, header, percentile, summary_ms, temp_project, verdict

from kitty_ops.host import procs
from kitty_ops.supervise import watch

HOST = "127.0.0.1"


# ------------------------------------------------------------------------------- A. detection

def _sleeper(adopted: bool) -> tuple[procs.Identity, subprocess.Popen | None]:
    code = "import time; time.sleep(120)"
    if not adopted:
        child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        return procs.identity_after_spawn(child), child
    # Not our child: a middle process starts it and exits, so it is reparented away from us.
    middle = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, time; p = subprocess.Popen(['sleep', '120'], "
                               "start_new_session=True); print(p.pid, flush=True); time.sleep(0.2)"],
                              stdout=subprocess.PIPE, text=True)
    pid = int(middle.stdout.readline())
    middle.wait(5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        identity = procs.identity_of(pid)
        if identity and identity.args == ("sleep", "120"):
            return identity, None
        time.sleep(0.01)
    raise RuntimeError("the adopted sleeper did not start")


def detection(method: str, crashes: int) -> list[float]:
    latencies = []
    for _ in range(crashes):
        identity, child = _sleeper(adopted=method != "waitpid")
        noticed = threading.Event()
        seen: list[watch.Death] = []
        watch.watch(identity, child, lambda d: (seen.append(d), noticed.set()), poll=0.05, method=method)
        # A random phase: a kill at a fixed delay would line up with the poll's own wake-ups.
        time.sleep(0.05 + random.uniform(0, 0.1))
        killed = time.monotonic()
        os.kill(identity.pid, signal.SIGKILL)  # our own sleeper, just verified by identity
        if not noticed.wait(5):
            raise RuntimeError(f"{method}: the death was not noticed within 5 s")
        latencies.append(seen[0].at - killed)
        if child is not None:
            child.wait(5)
    return latencies


# --------------------------------------------------------------------------- B. restart time

def _view(project) -> dict:
    try:
        return json.loads((project.logs / "supervisor.json").read_text())["components"]["llama:q4"]
    except (OSError, ValueError, KeyError):
        return {}


def _ready_time(path: Path, after: float, timeout: float = 20) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = float(path.read_text().strip())
            if value > after:
                return value
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    return None


def restart_overhead(restarts: int) -> tuple[list[float], list[float], list[float]]:
    """(kill -> supervisor says running, server's own load, overhead) per restart, seconds."""
    totals, loads, overheads = [], [], []
    with temp_project("supervise") as project:
        ready = project.root / "ready"
        project.fake_env({"q4": f"--fake-load-seconds 0.2 --fake-ready-file {ready}"},
                         KITTY_SUPERVISE_BACKOFF_INITIAL=0, KITTY_SUPERVISE_MAX_FAILURES=1000,
                         KITTY_STOP_GRACE=1)
        log = open(project.root / "supervise.out", "w")
        proc = subprocess.Popen(project.argv("supervise"), cwd=project.root, env=project.env(),
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while _view(project).get("state") != "running":
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the supervisor did not bring q4 up")
                time.sleep(0.02)
            for _ in range(restarts):
                old = project.record("q4")
                killed = time.time()
                os.kill(old["pid"], signal.SIGKILL)  # the record's pid, started by kitty-ops for this project
                deadline = time.monotonic() + 30
                while True:
                    seen = _view(project)
                    if seen.get("state") == "running" and seen.get("pid") not in (None, old["pid"]):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"q4 not back within 30 s: {seen}")
                    time.sleep(0.002)
                healthy = seen["since"]  # wall clock when the supervisor saw it healthy
                new = project.record("q4")
                server_ready = _ready_time(ready, killed)
                load = server_ready - new["started_at"]  # spawned (exec done) -> ready; create_time has 1 s grain
                totals.append(healthy - killed)
                loads.append(load)
                overheads.append(healthy - killed - load)
                time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()
    return totals, loads, overheads


# ----------------------------------------------------------------------- C. supervisord

def supervisord_restart(restarts: int) -> tuple[list[float], list[float]] | None:
    binary = shutil.which("supervisord") or str(Path(sys.executable).parent / "supervisord")
    if not os.path.exists(binary):
        return None
    with tempfile.TemporaryDirectory(prefix="kitty-bench-supervisord-") as tmp:
        root = Path(tmp)
        port = _free_port()
        rpc_port = _free_port()
        ready = root / "ready"
        conf = configparser.ConfigParser()
        conf["supervisord"] = {"logfile": str(root / "supervisord.log"), "pidfile": str(root / "supervisord.pid"),
                               "nodaemon": "true"}
        conf["inet_http_server"] = {"port": f"{HOST}:{rpc_port}"}
        conf["rpcinterface:supervisor"] = {
            "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"}
        conf["program:fake"] = {
            "command": f"{sys.executable} {FAKE_SERVER} --host {HOST} --port {port} --fake-load-seconds 0.2 "
                       f"--fake-ready-file {ready}",
            "autorestart": "true", "startsecs": "0", "startretries": "1000", "stopasgroup": "true",
            "killasgroup": "true"}
        with open(root / "supervisord.conf", "w") as handle:
            conf.write(handle)
        daemon = subprocess.Popen([binary, "-c", str(root / "supervisord.conf")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        rpc = xmlrpc.client.ServerProxy(f"http://{HOST}:{rpc_port}/RPC2")
        to_running, to_ready = [], []
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    info = rpc.supervisor.getProcessInfo("fake")
                    if info["statename"] == "RUNNING" and _ready_time(ready, 0, 0.01):
                        break
                except (OSError, xmlrpc.client.Fault):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("supervisord did not start the fake server")
                time.sleep(0.05)
            for _ in range(restarts):
                pid = rpc.supervisor.getProcessInfo("fake")["pid"]
                killed = time.time()
                os.kill(pid, signal.SIGKILL)  # supervisord's child in this benchmark's own daemon
                while True:
                    info = rpc.supervisor.getProcessInfo("fake")
                    if info["statename"] == "RUNNING" and info["pid"] != pid:
                        break
                    time.sleep(0.002)
                to_running.append(time.time() - killed)
                to_ready.append(_ready_time(ready, killed) - killed)
                time.sleep(0.3)
        finally:
            try:
                rpc.supervisor.shutdown()
                daemon.wait(15)
            except (OSError, xmlrpc.client.Fault, subprocess.TimeoutExpired):
                os.killpg(daemon.pid, signal.SIGKILL)  # our own child's group
                daemon.wait(5)
        return to_running, to_ready


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- D. idle cost

def idle_cost(seconds: float) -> tuple[float, int]:
    with temp_project("supervise-idle") as project:
        project.fake_env({"q4": "", "f16": "", "summary": "", "vision": ""}, KITTY_STOP_GRACE=1)
        proc = subprocess.Popen(project.argv("supervise"), cwd=project.root, env=project.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    views = json.loads((project.logs / "supervisor.json").read_text())["components"]
                    if len(views) == 4 and all(v["state"] == "running" for v in views.values()):
                        break
                except (OSError, ValueError, KeyError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the 4 servers did not come up under the supervisor")
                time.sleep(0.1)
            me = psutil.Process(proc.pid)
            time.sleep(2)
            before = me.cpu_times()
            time.sleep(seconds)
            after = me.cpu_times()
            rss = me.memory_info().rss
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    used = (after.user - before.user) + (after.system - before.system)
    return used / seconds * 60, rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crashes", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    header("kitty-ops supervise: detection, restart overhead, supervisord, idle cost")

    print("A. crash-to-detect latency (SIGKILL to the watcher's report)")
    methods = [("waitpid", "child (waitpid)", 0.020)]
    if hasattr(os, "pidfd_open"):
        methods.append(("pidfd", "adopted (pidfd)", 0.100))
    methods.append(("poll", "adopted (poll, 50 ms)", 0.100))
    for method, label, target in methods:
        values = detection(method, args.crashes)
        p95 = percentile(values, 95)
        print(f"  {label:<22} {summary_ms(values)}   target p95 <= {target * 1000:.0f} ms: {verdict(p95, target)}")

    print("\nB. kitty-ops supervise: SIGKILL to healthy again (the supervisor's view), backoff 0")
    totals, loads, overheads = restart_overhead(args.restarts)
    print(f"  kill -> healthy        {summary_ms(totals)}")
    print(f"  server's own load      {summary_ms(loads)}")
    p50 = percentile(overheads, 50)
    print(f"  overhead (difference)  {summary_ms(overheads)}   target p50 <= 300 ms: {verdict(p50, 0.3)}")

    print("\nC. supervisord (autorestart=true, startsecs=0), the same fake server")
    compared = supervisord_restart(args.restarts)
    if compared is None:
        print("  supervisord is not installed (pip install supervisor): skipped")
    else:
        to_running, to_ready = compared
        print(f"  kill -> RUNNING        {summary_ms(to_running)}   (does not wait for health)")
        print(f"  kill -> server ready   {summary_ms(to_ready)}   (its own ready file)")
        print(f"  kitty-ops kill -> healthy p50 {percentile(totals, 50) * 1000:.0f} ms against supervisord "
              f"kill -> ready p50 {percentile(to_ready, 50) * 1000:.0f} ms")

    print(f"\nD. idle cost with 4 servers over {args.idle_seconds:g} s (probe interval 5 s)")
    cpu_per_minute, rss = idle_cost(args.idle_seconds)
    share = cpu_per_minute / 60
    print(f"  CPU {cpu_per_minute:.2f} s per minute = {share * 100:.2f} % of a core; RSS {rss / 2**20:.1f} MiB   "
          f"target < 1 %: {verdict(share, 0.01)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
