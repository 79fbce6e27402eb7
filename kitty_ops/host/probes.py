"""HTTP probes and the readiness wait.

The wait polls `/health` on a schedule that starts fast and settles at an interval short enough
to notice readiness within ~100 ms without hammering a loading server (about 12 requests a
second). Between probes it does not sleep blindly: it waits on the process itself, so a server
that dies while loading is noticed at once rather than at the deadline.
"""

from __future__ import annotations

import dataclasses
import enum
import http.client
import json
import socket
import threading
import time
from typing import Callable, Iterator
from urllib.parse import urlsplit


class Health(str, enum.Enum):
    READY = "ready"  # 200 from /health
    LOADING = "loading"  # 503: llama-server answers this while the model loads
    REFUSED = "refused"  # nothing listening yet (or any more)
    ERROR = "error"  # another status, a timeout, garbage


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    health: Health
    status: int | None
    detail: str
    latency: float


def http_request(url: str, method: str = "GET", body: bytes | None = None,
                 timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP request with the standard library (no third-party import on the hot path)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(1024 * 1024)
    finally:
        conn.close()


def probe_health(base_url: str, timeout: float = 1.0, path: str = "/health") -> ProbeResult:
    started = time.perf_counter()
    try:
        status, body = http_request(base_url + path, timeout=timeout)
    except ConnectionRefusedError:
        return ProbeResult(Health.REFUSED, None, "connection refused", time.perf_counter() - started)
    except (OSError, http.client.HTTPException) as exc:
        detail = "timed out" if isinstance(exc, (socket.timeout, TimeoutError)) else str(exc) or exc.__class__.__name__
        return ProbeResult(Health.ERROR, None, detail, time.perf_counter() - started)
    latency = time.perf_counter() - started
    if status == 200:
        return ProbeResult(Health.READY, status, "ok", latency)
    if status == 503:
        return ProbeResult(Health.LOADING, status, _error_message(body) or "loading model", latency)
    return ProbeResult(Health.ERROR, status, f"HTTP {status}: {_error_message(body)}", latency)


def _error_message(body: bytes) -> str:
    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return str(data["error"].get("message", ""))
    except ValueError:
        pass
    return body[:200].decode("utf-8", errors="replace").strip()


def poll_intervals(first: float = 0.01, factor: float = 1.5, cap: float = 0.075) -> Iterator[float]:
    """The pause before each next probe: 10 ms, 15 ms, 22 ms ... settling at 75 ms."""
    interval = first
    while True:
        yield interval
        interval = min(interval * factor, cap)


class Outcome(str, enum.Enum):
    READY = "ready"
    DIED = "died"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


@dataclasses.dataclass(frozen=True)
class WaitResult:
    outcome: Outcome
    seconds: float
    detail: str


def wait_ready(
    base_url: str,
    deadline: float,
    wait_exit: Callable[[float], str | None],
    cancel: threading.Event,
    on_health: Callable[[Health, str], None] = lambda health, detail: None,
    clock: Callable[[], float] = time.monotonic,
    intervals: Iterator[float] | None = None,
    path: str = "/health",
) -> WaitResult:
    """Poll `base_url`/health until 200, the process exits, the deadline passes or `cancel` is set.

    `wait_exit(seconds)` blocks up to `seconds` and returns a description when the process has
    exited (else None): it is both the pause between probes and the death check.
    """
    started = clock()
    intervals = intervals or poll_intervals()
    last: Health | None = None
    while True:
        if cancel.is_set():
            return WaitResult(Outcome.CANCELLED, clock() - started, "cancelled")
        remaining = deadline - clock()
        result = probe_health(base_url, timeout=max(0.05, min(1.0, remaining)), path=path)
        if result.health is Health.READY:
            return WaitResult(Outcome.READY, clock() - started, "healthy")
        if result.health is not last:
            on_health(result.health, result.detail)
            last = result.health
        remaining = deadline - clock()
        if remaining <= 0:
            return WaitResult(Outcome.TIMEOUT, clock() - started,
                              f"not healthy after {clock() - started:.1f}s (last: {result.detail})")
        exited = wait_exit(min(next(intervals), remaining))
        if exited:
            return WaitResult(Outcome.DIED, clock() - started, exited)
