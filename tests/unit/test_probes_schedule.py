"""probes: the poll schedule and wait_ready's four outcomes, against a real local HTTP server."""

from __future__ import annotations

import itertools
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kitty_ops.host import probes
from kitty_ops.host.probes import Health, Outcome, poll_intervals, probe_health, wait_ready
from tests.harness import free_port


def test_poll_intervals_start_grow_and_cap():
    first = list(itertools.islice(poll_intervals(), 50))
    assert first[0] == pytest.approx(0.010)
    assert first[1] > first[0] and first[2] > first[1]
    assert all(b >= a for a, b in zip(first, first[1:]))
    assert max(first) <= 0.075
    assert first[-1] == pytest.approx(0.075)
    # It settles within a handful of probes, so readiness is noticed within ~100 ms.
    assert first.index(max(first)) <= 6


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        server = self.server
        with server.lock:
            server.hits += 1
            hits = server.hits
        if self.path != "/health":
            self.send_response(404)
            self.end_headers()
            return
        if hits <= server.loading_answers:
            body = b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}'
            self.send_response(503)
        elif server.final_status == 200:
            body = b'{"status":"ok"}'
            self.send_response(200)
        else:
            body = b"teapot"
            self.send_response(server.final_status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    servers = []

    def start(loading_answers: int = 2, final_status: int = 200):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.lock = threading.Lock()
        server.hits = 0
        server.loading_answers = loading_answers
        server.final_status = final_status
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def no_exit(seconds: float) -> str | None:
    time.sleep(seconds)
    return None


def test_probe_health_states(health_server):
    url, server = health_server(loading_answers=1)
    loading = probe_health(url)
    assert loading.health is Health.LOADING and loading.status == 503
    assert loading.detail == "Loading model"
    ready = probe_health(url)
    assert ready.health is Health.READY and ready.status == 200
    refused = probe_health(f"http://127.0.0.1:{free_port()}")
    assert refused.health is Health.REFUSED and refused.status is None


def test_probe_health_other_status_is_error(health_server):
    url, _ = health_server(loading_answers=0, final_status=418)
    result = probe_health(url)
    assert result.health is Health.ERROR and result.status == 418
    assert "418" in result.detail


def test_wait_ready_after_loading(health_server):
    url, server = health_server(loading_answers=2)
    seen: list[Health] = []
    started = time.monotonic()
    result = wait_ready(url, time.monotonic() + 10, no_exit, threading.Event(),
                        on_health=lambda health, detail: seen.append(health))
    assert result.outcome is Outcome.READY
    assert result.detail == "healthy"
    assert server.hits == 3
    assert seen == [Health.LOADING]  # reported once, not on every probe
    assert time.monotonic() - started < 2.0


def test_wait_ready_died_is_noticed_at_once():
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens
    calls: list[float] = []

    def exited(seconds: float) -> str | None:
        calls.append(seconds)
        return "exited with status 1"

    started = time.monotonic()
    result = wait_ready(url, time.monotonic() + 30, exited, threading.Event())
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.DIED
    assert result.detail == "exited with status 1"
    assert len(calls) == 1
    assert calls[0] == pytest.approx(0.010)
    assert elapsed < 1.0  # well before the 30 s deadline


def test_wait_ready_timeout():
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = wait_ready(url, time.monotonic() + 0.3, no_exit, threading.Event())
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.TIMEOUT
    assert "not healthy after" in result.detail and "connection refused" in result.detail
    assert 0.25 <= elapsed < 2.0


def test_wait_ready_timeout_with_fake_clock(health_server):
    url, _ = health_server(loading_answers=10_000)
    now = [100.0]

    def clock() -> float:
        return now[0]

    def advance(seconds: float) -> str | None:
        now[0] += seconds
        return None

    result = wait_ready(url, 100.5, advance, threading.Event(), clock=clock)
    assert result.outcome is Outcome.TIMEOUT
    assert result.seconds == pytest.approx(0.5)
    assert "Loading model" in result.detail


def test_wait_ready_cancelled_before_start():
    cancel = threading.Event()
    cancel.set()
    result = wait_ready(f"http://127.0.0.1:{free_port()}", time.monotonic() + 30, no_exit, cancel)
    assert result.outcome is Outcome.CANCELLED


def test_wait_ready_cancelled_while_waiting(health_server):
    url, _ = health_server(loading_answers=10_000)
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    started = time.monotonic()
    try:
        result = wait_ready(url, time.monotonic() + 30, no_exit, cancel)
    finally:
        timer.cancel()
    assert result.outcome is Outcome.CANCELLED
    assert time.monotonic() - started < 2.0


def test_wait_ready_waits_between_probes_on_the_schedule():
    url = f"http://127.0.0.1:{free_port()}"
    pauses: list[float] = []

    def record(seconds: float) -> str | None:
        pauses.append(seconds)
        return "exited" if len(pauses) == 8 else None

    result = wait_ready(url, time.monotonic() + 30, record, threading.Event())
    assert result.outcome is Outcome.DIED
    expected = list(itertools.islice(probes.poll_intervals(), 8))
    assert pauses == pytest.approx(expected)
