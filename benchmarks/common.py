"""Shared helpers for the kitty-ops benchmarks: statistics, a temporary project built with the
test harness, and fake llama-servers spawned directly (for the in-process and baseline runs).

Every benchmark talks only to 127.0.0.1 and cleans up what it started: projects are stopped with
`python -m kitty_ops stop`, directly spawned fakes (our own children) are killed by process group.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.harness import FAKE_SERVER, Project, StackProject, free_port, write_tiny_gguf  # noqa: E402,F401

HOST = "127.0.0.1"


# ------------------------------------------------------------------------------------ statistics

def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (the same as numpy's default), pct in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(values: Sequence[float]) -> str:
    """'p50 … p95 … max …' of values given in seconds, printed in milliseconds."""
    return (f"n={len(values):<3} min {min(values) * 1000:8.1f} ms   p50 {percentile(values, 50) * 1000:8.1f} ms   "
            f"p95 {percentile(values, 95) * 1000:8.1f} ms   max {max(values) * 1000:8.1f} ms")


def summary_s(values: Sequence[float]) -> str:
    return (f"n={len(values):<3} min {min(values):6.3f} s   median {percentile(values, 50):6.3f} s   "
            f"max {max(values):6.3f} s")


def verdict(value: float, target: float) -> str:
    """Information only: benchmarks never fail on timing."""
    return "PASS" if value <= target else "MISS"


def header(title: str) -> None:
    print("=" * 78)
    print(title)
    print(f"python {sys.version.split()[0]} at {sys.executable}; {os.cpu_count()} CPU(s)")
    print("=" * 78, flush=True)


# --------------------------------------------------------------------------------- projects

def docker_test_image() -> str | None:
    """Bring up the tests' Docker engine and image (ops/dev/test-docker-engine.sh); the image
    tag, or None (with the script's error on stderr) when there is no engine."""
    from tests.harness import ENGINE_SCRIPT
    engine = subprocess.run(["bash", str(ENGINE_SCRIPT)], capture_output=True, text=True)
    if engine.returncode != 0:
        print(engine.stderr, file=sys.stderr)
        return None
    return engine.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def temp_project(prefix: str) -> Iterator[Project]:
    """A throwaway kitty-ops project; whatever it still runs is stopped by kitty-ops on exit."""
    with tempfile.TemporaryDirectory(prefix=f"kitty-bench-{prefix}-") as tmp:
        project = Project(Path(tmp))
        try:
            yield project
        finally:
            if project.env_file.exists():
                done = project.run("stop", "--grace", "1", timeout=60)
                if done.returncode != 0:
                    print(f"warning: cleanup stop exited {done.returncode}: {done.stderr.strip()}",
                          file=sys.stderr)


@contextlib.contextmanager
def temp_stack(prefix: str, image: str) -> Iterator[StackProject]:
    """A throwaway project with a compose tier of its own (the tiny model file, the test image);
    on exit whatever it runs is stopped and its containers and volumes are removed."""
    with tempfile.TemporaryDirectory(prefix=f"kitty-bench-{prefix}-") as tmp:
        root = Path(tmp)
        write_tiny_gguf(root / "models" / "tiny.gguf")
        project = StackProject(root, image)
        try:
            yield project
        finally:
            project.run("stop", "--grace", "1", timeout=120)
            project.compose("down", "--volumes", "--remove-orphans", "--timeout", "1", timeout=120)


def started(project: Project) -> bool:
    """`kitty-ops start`; False (with its stderr printed) when it failed."""
    done = project.run("start", timeout=240)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
    return done.returncode == 0


def timed_run(project: Project, *args: str, timeout: float = 120,
              extra_env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Wall-clock seconds of one CLI invocation (interpreter start included); `extra_env` from
    kitty_ops_at() runs another revision of kitty-ops."""
    started = time.perf_counter()
    done = subprocess.run(project.argv(*args), cwd=project.root, env={**project.env(), **(extra_env or {})},
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started, done


@contextlib.contextmanager
def kitty_ops_at(revision: str | None) -> Iterator[dict[str, str]]:
    """The environment that runs kitty-ops as it was at git `revision` (a temporary worktree,
    its bytecode compiled, first on PYTHONPATH; the CLI runs in the project's directory, so this
    tree's editable install comes after it): the "before" of a before/after figure in one run.
    {} for None: this tree."""
    if revision is None:
        yield {}
        return
    with tempfile.TemporaryDirectory(prefix="kitty-bench-before-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), revision],
                       check=True, capture_output=True)
        try:
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "kitty_ops")], capture_output=True)
            yield {"PYTHONPATH": str(tree)}
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)


# ------------------------------------------------------------------------- directly spawned fakes

class Fakes:
    """Fake llama-servers spawned by the benchmark itself, each in its own session (as
    kitty-ops and the seed scripts start them). They are our children, so signalling them by
    PID is safe; `close()` kills whatever is left."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, port: int, *flags: str) -> subprocess.Popen:
        argv = [sys.executable, str(FAKE_SERVER), "--host", HOST, "--port", str(port), *flags]
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        self.procs.append(popen)
        return popen

    def close(self) -> None:
        for popen in self.procs:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5)
        self.procs.clear()

    def __enter__(self) -> "Fakes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def health_status(port: int, timeout: float = 1.0) -> int | None:
    """GET /health with http.client; the status code, or None when nothing answers."""
    import http.client
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_healthy(ports: Sequence[int], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        pending = [p for p in pending if health_status(p) != 200]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"fake servers on ports {pending} not healthy after {timeout:g}s")
        time.sleep(0.05)


def read_ready_file(path: Path, timeout: float = 2.0) -> float:
    """The time.time() the fake wrote when it turned ready (waits briefly for the write)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text().strip()
            if text:
                return float(text)
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the fake never wrote its ready file {path}")
        time.sleep(0.005)
