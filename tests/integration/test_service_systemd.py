"""`kitty-ops service install` under a real systemd: systemd as PID 1 in a container
(tests/systemd/Dockerfile; no --privileged), kitty-ops and its Python bind-mounted read-only from
this machine, the project directory shared. In it: install, the stack comes up; kill a server:
back; `docker restart` (a reboot): the stack comes back by itself; uninstall: stack stopped, unit
gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import REPO, Project, docker, wait_until

pytestmark = pytest.mark.docker

DOCKERFILE_DIR = REPO / "tests" / "systemd"


@pytest.fixture(scope="module")
def systemd_image(docker_image) -> str:
    """Built on the tests' Debian base (the docker_image fixture brings up the engine and it)."""
    import hashlib
    digest = hashlib.sha256((DOCKERFILE_DIR / "Dockerfile").read_bytes()).hexdigest()[:12]
    image = f"kitty-ops-test/systemd:{digest}"
    if docker("image", "inspect", image).returncode != 0:
        built = docker("build", "-q", "--network", "host", "-t", image, str(DOCKERFILE_DIR), timeout=900)
        assert built.returncode == 0, built.stderr
    return image


def _mounts() -> list[str]:
    """This checkout, read-only, at the same path; and the Python its venv runs on when it is not
    the system's (the image has Debian's python3 in /usr, which must not be covered)."""
    python_home = Path(os.path.realpath(sys.executable)).parents[1]
    paths = {str(REPO)} | (set() if str(python_home).startswith("/usr") else {str(python_home)})
    mounts = []
    for path in sorted(paths):
        mounts += ["-v", f"{path}:{path}:ro"]
    return mounts


def test_the_service_keeps_the_stack_up_across_a_crash_and_a_reboot(tmp_path, systemd_image):
    project = Project(tmp_path / "proj")
    project.root.mkdir()
    engine = project.root / "llama-server"  # the fake, through this venv's Python (no python3 on PATH in there)
    engine.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO / 'tests' / 'fakes' / 'fake_llama_server.py'} \"$@\"\n")
    engine.chmod(0o755)
    project.fake_env({"q4": ""}, LLAMACPP_SERVER_BIN=engine, KITTY_STOP_GRACE=1,
                     KITTY_SUPERVISE_PROBE_INTERVAL=0.5, KITTY_SUPERVISE_BACKOFF_INITIAL=0.2)
    name = f"kitty-systemd-{os.getpid()}-{tmp_path.name[-8:]}".lower()
    root = str(project.root)
    started = docker("run", "-d", "--name", name, "--tmpfs", "/run", "--tmpfs", "/run/lock",
                     "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", *_mounts(), "-v", f"{root}:{root}",
                     systemd_image, timeout=120)
    assert started.returncode == 0, started.stderr

    def inside(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return docker("exec", "-e", f"KITTY_PROJECT_DIR={root}", "-w", root, name, *argv, timeout=timeout)

    def kitty(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return inside(str(REPO / ".venv" / "bin" / "kitty-ops"), *args, timeout=timeout)

    def q4() -> dict:
        try:
            return json.loads((project.logs / "supervisor.json").read_text())["components"]["llama:q4"]
        except (OSError, ValueError, KeyError):
            return {}

    def q4_pid() -> int | None:
        try:
            return project.record("q4")["pid"]
        except (OSError, ValueError, KeyError):
            return None

    def supervisor_started() -> float:
        try:
            return json.loads((project.logs / "supervisor.json").read_text())["started_at"]
        except (OSError, ValueError, KeyError):
            return 0.0

    def running_inside(pid: int) -> bool:
        return inside("kill", "-0", str(pid), timeout=30).returncode == 0

    try:
        inside("systemctl", "is-system-running", "--wait", timeout=90)  # running or degraded: booted
        installed = kitty("service", "install", "--system")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        unit = next(l for l in installed.stdout.splitlines() if l.endswith("installed and started")).split(":")[0]
        assert wait_until(lambda: q4().get("state") == "running", 60), (project.logs / "supervise.log").read_text()
        again = kitty("service", "install", "--system")  # idempotent
        assert again.returncode == 0 and "already installed and running" in again.stdout, again.stdout

        first = q4_pid()
        assert inside("kill", "-9", str(first)).returncode == 0  # a crash
        assert wait_until(lambda: q4_pid() not in (None, first) and q4().get("state") == "running", 30)

        before_reboot, rebooted_at = q4_pid(), time.time()
        assert docker("restart", "-t", "30", name, timeout=120).returncode == 0  # a reboot
        assert wait_until(lambda: supervisor_started() > rebooted_at and q4().get("state") == "running"
                          and q4_pid() not in (None, before_reboot) and running_inside(q4_pid()), 90), \
            (project.logs / "supervise.log").read_text()
        status = kitty("service", "status", "--system")
        assert "active (running)" in status.stdout and "llama:q4: running" in status.stdout, status.stdout

        last = q4_pid()
        gone = kitty("service", "uninstall", "--system")
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert not running_inside(last)  # --stop-on-exit: the stack stopped with the supervisor
        assert q4_pid() is None
        assert inside("test", "-e", f"/etc/systemd/system/{Path(unit).name}").returncode != 0
        assert inside("systemctl", "is-enabled", Path(unit).name).returncode != 0
    finally:
        docker("rm", "-f", name, timeout=120)
