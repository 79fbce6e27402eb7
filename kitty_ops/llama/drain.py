"""Drain before stop: a llama server is stopped only once no answer is being written.

llama-server, sent SIGTERM with a request in flight, logs "cleaning up before exit..." and then
neither exits nor finishes the request; only SIGKILL ends it, after the whole grace period, and
the client gets a reset connection. Idle, it exits in a tenth of a second. So a planned stop
first waits until the server has no request in flight, read from its `/slots` (`is_processing`
per slot) or else its `/metrics` (`llamacpp:requests_processing` + `requests_deferred`), and
only then sends SIGTERM. The graph stops the callers (brain, the images API) first, so no new
requests arrive; a server that keeps receiving them is drained until it has been idle for a
moment, or until its deadline (`LLAMACPP_<NAME>_DRAIN_TIMEOUT`, `KITTY_DRAIN_TIMEOUT`,
`stop --drain-timeout`); one idle at the first look is stopped at once. A server that answers
neither endpoint (an old build, a hung server) is not waited on. Ctrl+C during a drain ends every
drain at once (`skip_remaining`); the stop then goes on as usual. The emergency stop never drains.

The wait is pure over an injected reader and clock (`wait_idle`), so its rules are unit-tested
without a server; `in_flight` is the one function that asks a real one.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
import time
from typing import Callable

from kitty_ops.host import probes

IDLE_FOR = 0.2  # seconds with nothing in flight that make a server idle (a burst may follow)
POLL = 0.05
PROBE_TIMEOUT = 1.0
PROGRESS_EVERY = 2.0

_SKIP = threading.Event()  # set by the operator's Ctrl+C: stop waiting, stop as usual


def skip_remaining() -> None:
    """End every drain now (the CLI's first Ctrl+C during a stop)."""
    _SKIP.set()


@dataclasses.dataclass(frozen=True)
class Drained:
    waited: float  # seconds
    in_flight_at_start: int | None  # None: the server could not say
    cut: int  # requests still in flight when the drain ended (the stop cuts them)
    reason: str = ""  # why the drain ended early: unreadable, interrupted, exited, disabled

    def describe(self) -> str:
        if self.reason:
            return f"not drained: {self.reason}"
        if self.cut:
            return f"{_requests(self.cut)} cut after the {self.waited:.0f}s drain deadline"
        if self.in_flight_at_start:
            return f"drained ({_requests(self.in_flight_at_start)} finished in {self.waited:.1f}s)"
        return "idle"

    @property
    def waited_for_answers(self) -> bool:
        """Answers were in flight: worth a word in the stop's row (an idle server's row, or one
        that cannot say, reads as before; the progress line and the JSON tell the rest)."""
        return bool(self.in_flight_at_start) or self.cut > 0

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "summary": self.describe()}


def _requests(n: int) -> str:
    return f"{n} request{'' if n == 1 else 's'}"


def parse_slots(body: bytes) -> int | None:
    """`/slots` -> how many slots are processing a request; None when it is not a slot list."""
    try:
        slots = json.loads(body)
    except ValueError:
        return None
    if not isinstance(slots, list) or not all(isinstance(s, dict) and "is_processing" in s for s in slots):
        return None
    return sum(1 for s in slots if s["is_processing"])


def parse_metrics(text: str) -> int | None:
    """`/metrics` -> requests processing plus deferred; None when neither gauge is there."""
    found = None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("llamacpp:requests_processing", "llamacpp:requests_deferred"):
            try:
                found = (found or 0) + int(float(value))
            except ValueError:
                return None
    return found


def in_flight(url: str, timeout: float = PROBE_TIMEOUT, headers: dict[str, str] | None = None) -> int | None:
    """Requests the server at `url` is working on, or None when it cannot say (`headers`: the
    server's API key, which /slots and /metrics need when it has one)."""
    for path, parse in (("/slots", parse_slots), ("/metrics", lambda b: parse_metrics(b.decode(errors="replace")))):
        try:
            code, body = probes.http_request(url + path, "GET", None, timeout, headers)
        except (OSError, http.client.HTTPException):
            return None  # refused or timed out: a second endpoint would not answer either
        if code == 200:
            count = parse(body)
            if count is not None:
                return count
    return None


def wait_idle(read: Callable[[], int | None], timeout: float, alive: Callable[[], bool],
              on_progress: Callable[[int, float], None] = lambda n, left: None,
              clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = lambda s: _SKIP.wait(s)) -> Drained:
    """Wait until `read()` has said 0 for IDLE_FOR seconds, or `timeout` passes. Ends at once when
    the server cannot say (None), has exited, or the operator skipped the drain."""
    began = clock()
    deadline = began + timeout
    first = read()
    if first is None:
        return Drained(0.0, None, 0, "the server answers neither /slots nor /metrics")
    if first == 0:  # idle now, and its callers were stopped before it: no burst to wait out
        return Drained(clock() - began, 0, 0)
    count, idle_since, last_report = first, None, began - PROGRESS_EVERY
    while True:
        now = clock()
        if count == 0:
            idle_since = now if idle_since is None else idle_since
            if now - idle_since >= IDLE_FOR:
                return Drained(now - began, first, 0)
        else:
            idle_since = None
        if now >= deadline:
            return Drained(now - began, first, count)
        if _SKIP.is_set():
            return Drained(now - began, first, count, "skipped (Ctrl+C)")
        if not alive():
            return Drained(now - began, first, 0, "the server exited while draining")
        if count and now - last_report >= PROGRESS_EVERY:
            on_progress(count, deadline - now)
            last_report = now
        sleep(POLL)
        seen = read()
        if seen is None:  # it stopped answering mid-drain: nothing more to learn by waiting
            return Drained(clock() - began, first, count, "the server stopped answering /slots")
        count = seen
