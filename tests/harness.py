"""The test harness, shared by the tests and the benchmarks: a sandbox project directory, its
env file, and the CLI run as a real subprocess (the way an operator runs it); a stack project
with a compose tier of its own; the locations of the real engine and model. The pytest fixtures
built on it live in conftest.py.

Nothing here skips: a test of a real component that cannot find it fails and says how to get it
(`make setup`), so CI can never pass by skipping.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
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
    """The real llama-server: KITTY_TEST_ENGINE, else the one `make setup` checked runs on this
    CPU (see kitty_ops.demo.find_engine)."""
    explicit = os.environ.get("KITTY_TEST_ENGINE")
    if explicit:
        return explicit
    from kitty_ops.demo import find_engine
    found = find_engine()
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


def real_env(project: "Project", servers: dict[str, dict[str, object]], **extra: object) -> dict[str, int]:
    """Configure real llama-servers on the real model, small and single-threaded: {name: its
    LLAMACPP_<NAME>_* settings}. Returns {name: port}."""
    model = real_model()
    values: dict[str, object] = {
        "LLAMACPP_SERVERS": ",".join(servers),
        "LLAMACPP_SERVER_BIN": real_engine(),
        "LLAMACPP_MODELS_DIR": str(model.parent),
        "LLAMACPP_CTX": 1024, "LLAMACPP_PARALLEL": 1, "LLAMACPP_THREADS": 1,
        "LLAMACPP_BATCH": 256, "LLAMACPP_UBATCH": 128,
        "LLAMACPP_HEALTH_TIMEOUT": 240, "KITTY_STOP_GRACE": 15, "KITTY_COMPOSE_ENABLED": "false",
    }
    port_of = {}
    for name, settings in servers.items():
        port_of[name] = free_port()
        values[f"LLAMACPP_{name.upper()}_PORT"] = port_of[name]
        values[f"LLAMACPP_{name.upper()}_MODEL"] = model.name
        for key, value in settings.items():
            values[f"LLAMACPP_{name.upper()}_{key}"] = value
    values.update(extra)
    project.write_env(values)
    return port_of


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
            "KITTY_COMPOSE_ENABLED": "false",  # the container tests opt in with their own env
            # The fake serves no /metrics unless given --fake-metrics (an old build), and start
            # fails a server started with --metrics whose /metrics does not answer: no --metrics.
            "LLAMACPP_METRICS": "false",
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


# ------------------------------------------------------------------------- the container tier

ENGINE_SCRIPT = REPO / "ops" / "dev" / "test-docker-engine.sh"
COMPOSE_BASE = REPO / "infra" / "compose" / "docker-compose.yml"
COMPOSE_TEST = REPO / "tests" / "docker" / "compose.test.yml"
COMPOSE_PORT_VARS = ("POSTGRES_PORT", "REDIS_PORT", "MQTT_PORT", "OBJECT_STORE_PORT", "OBJECT_STORE_CONSOLE_PORT",
                     "BRAIN_PORT")


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


class StackProject(Project):
    """A project whose stack has a compose tier of its own: a unique compose project name, free
    ports, the real compose file plus the test override (and any extra override a test adds)."""

    def __init__(self, root: Path, image: str):
        super().__init__(root)
        self.image = image
        self.compose_project = f"kt{os.getpid()}{root.name[-12:]}".lower().replace("_", "")
        self.overrides: list[Path] = []

    def stack_env(self, servers: dict[str, str], profiles: str = "brain", **extra: object) -> dict[str, int]:
        ports = {var: free_port() for var in COMPOSE_PORT_VARS}
        files = ":".join(str(p) for p in [COMPOSE_BASE, COMPOSE_TEST, *self.overrides])
        values: dict[str, object] = {
            "KITTY_COMPOSE_ENABLED": "true", "KITTY_COMPOSE_FILE": files,
            "KITTY_COMPOSE_PROJECT": self.compose_project, "KITTY_COMPOSE_PROFILES": profiles,
            "KITTY_COMPOSE_TIMEOUT": 60, "KITTY_COMPOSE_STOP_TIMEOUT": 5, "KITTY_TEST_IMAGE": self.image,
            "POSTGRES_PASSWORD": "test-only-pg", "OBJECT_STORE_SECRET_KEY": "test-only-objects", **ports,
        }
        values.update(extra)
        return {**ports, **self.fake_env(servers, **values)}

    def add_override(self, text: str) -> None:
        path = self.root / f"override-{len(self.overrides)}.yml"
        path.write_text(text)
        self.overrides.append(path)

    def compose(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        files = [a for f in [COMPOSE_BASE, COMPOSE_TEST, *self.overrides] for a in ("-f", str(f))]
        env = {**os.environ, "KITTY_ENV_FILE": str(self.env_file)}
        return subprocess.run(["docker", "compose", "-p", self.compose_project, "--env-file",
                               str(self.env_file), *files, "--profile", "*", *args],
                              capture_output=True, text=True, timeout=timeout, env=env)

    def containers(self, all_states: bool = True) -> list[str]:
        done = docker("ps", *(["-a"] if all_states else []), "--filter",
                      f"label=com.docker.compose.project={self.compose_project}", "--format", "{{.Names}}")
        return sorted(done.stdout.split())

    def inspect(self, service: str) -> dict:
        done = docker("inspect", f"{self.compose_project}-{service}-1")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)[0]


@contextlib.contextmanager
def bystander(stack: StackProject):
    """A running container of another compose project, which kitty-ops must never touch."""
    name = f"bystander-{stack.compose_project}"
    created = docker("run", "-d", "--name", name, "--label", "com.docker.compose.project=someone-else",
                     "--entrypoint", "sleep", stack.image, "300")
    assert created.returncode == 0, created.stderr
    try:
        yield name
    finally:
        docker("rm", "-f", name)


# ------------------------------------------------------------------- answers in flight

class Completion(threading.Thread):
    """One /completion of exactly `tokens` tokens (ignore_eos), timed, in the background."""

    def __init__(self, port: int, tokens: int):
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/completion"
        self.body = json.dumps({"prompt": "Once upon a time", "n_predict": tokens, "ignore_eos": True}).encode()
        self.status: int | None = None
        self.answer: dict = {}
        self.error = ""
        self.ended = 0.0

    def run(self) -> None:
        request = urllib.request.Request(self.url, self.body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                self.status, self.answer = response.status, json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:  # reset, refused
            self.error = repr(exc)
        self.ended = time.monotonic()


def in_flight_on(port: int) -> int:
    """Requests the llama-server on `port` is answering (its /slots)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/slots", timeout=2) as response:
            return sum(1 for slot in json.loads(response.read()) if slot["is_processing"])
    except (urllib.error.URLError, OSError, ValueError):
        return 0


def answering(port: int, tokens: int) -> Completion:
    """A completion started on the real server on `port`, once it is being written."""
    completion = Completion(port, tokens)
    completion.start()
    assert wait_until(lambda: in_flight_on(port) == 1, 30), "the completion never started"
    return completion
