"""kitty_ops.llama.drain: reading a server's requests in flight, and the wait before SIGTERM,
over a scripted reader and a fake clock (no server, no sleeping)."""

from __future__ import annotations

import json
import threading

import pytest

from kitty_ops.llama import drain


@pytest.fixture(autouse=True)
def fresh_skip(monkeypatch):
    monkeypatch.setattr(drain, "_SKIP", threading.Event())


class Scripted:
    """A server whose in-flight count follows `counts` (the last one repeats), on a fake clock."""

    def __init__(self, *counts: int | None):
        self.counts = list(counts)
        self.now = 100.0
        self.reports: list[tuple[int, float]] = []

    def read(self) -> int | None:
        return self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def wait(self, timeout: float, alive=lambda: True) -> drain.Drained:
        return drain.wait_idle(self.read, timeout, alive, lambda n, left: self.reports.append((n, left)),
                               self.clock, self.sleep)


def test_slots_count_the_slots_processing():
    body = json.dumps([{"id": 0, "is_processing": False}, {"id": 1, "is_processing": True},
                       {"id": 2, "is_processing": True}]).encode()
    assert drain.parse_slots(body) == 2
    assert drain.parse_slots(b'{"error": "not found"}') is None
    assert drain.parse_slots(b"<html>") is None


def test_metrics_count_processing_and_deferred():
    text = ("# HELP llamacpp:requests_processing Number of requests processing\n"
            "llamacpp:requests_processing 1\nllamacpp:requests_deferred 2\nllamacpp:n_decode_total 40\n")
    assert drain.parse_metrics(text) == 3
    assert drain.parse_metrics("llamacpp:n_decode_total 40\n") is None


def test_an_idle_server_is_stopped_at_once():
    server = Scripted(0)
    done = server.wait(30)
    assert (done.waited, done.cut, done.reason) == (0.0, 0, "") and done.describe() == "idle"
    assert not done.waited_for_answers  # the stop's row reads as before


def test_a_server_that_cannot_say_is_not_waited_on():
    done = Scripted(None).wait(30)
    assert done.waited == 0.0 and "neither /slots nor /metrics" in done.describe()


def test_requests_in_flight_are_waited_for_until_idle_for_a_moment():
    server = Scripted(2, 2, 1, 1, 0)
    done = server.wait(30)
    assert done.cut == 0 and done.reason == "" and done.in_flight_at_start == 2
    assert 4 * drain.POLL + drain.IDLE_FOR <= done.waited <= 5 * drain.POLL + drain.IDLE_FOR + 1e-9
    assert done.describe().startswith("drained (2 requests finished") and done.waited_for_answers
    assert server.reports[0] == (2, 30.0)  # progress at once, then every few seconds


def test_a_burst_after_a_quiet_moment_is_waited_for_too():
    server = Scripted(1, 0, 1, 1, 0)  # idle for one poll, then a new request
    done = server.wait(30)
    assert done.cut == 0 and done.waited >= 4 * drain.POLL + drain.IDLE_FOR


def test_a_server_that_never_turns_idle_is_cut_at_the_deadline_and_says_how_many():
    server = Scripted(1, 3)
    done = server.wait(5)
    assert done.cut == 3 and 5.0 <= done.waited < 5.0 + drain.POLL * 2
    assert done.describe() == "3 requests cut after the 5s drain deadline"
    assert [n for n, _ in server.reports] == [1, 3, 3]  # at 0 s, 2 s, 4 s


def test_a_server_that_exits_while_draining_ends_the_wait():
    lives = iter([True, True, False])
    done = Scripted(1).wait(30, alive=lambda: next(lives))
    assert done.reason == "the server exited while draining" and done.waited < 1


def test_ctrl_c_ends_every_drain_at_once():
    server = Scripted(1)
    threading.Timer(0, drain.skip_remaining).run()
    done = server.wait(30)
    assert done.reason == "skipped (Ctrl+C)" and done.cut == 1 and done.waited < 1
