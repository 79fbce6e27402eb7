"""Drain before stop, with the real llama-server and the real model: a stop never cuts an answer
that is being written (the client gets all its tokens, and the stop ends right after it); an
answer longer than the drain deadline is cut and the row says so; `--no-drain` and the emergency
stop do not wait. Fake servers show what a real one cannot on demand: slots that never turn
idle, and no /slots or /metrics at all (an old build)."""

from __future__ import annotations

import json
import signal
import time

import pytest

from kitty_ops.host import ports
from tests.harness import alive, answering, real_env


def timed(project, *args: str) -> tuple[int, dict, float]:
    began = time.monotonic()
    code, out = project.json(*args, timeout=180)
    return code, out, time.monotonic() - began


@pytest.mark.real_engine
def test_a_stop_waits_for_the_answer_in_flight_which_arrives_whole(project):
    port = real_env(project, {"q4": {}})["q4"]
    assert project.run("start", timeout=300).returncode == 0
    pid = project.record("q4")["pid"]
    completion = answering(port, 60)

    # status and health show the request in flight while it is written
    _, status = project.json("status")
    q4 = next(c for c in status["components"] if (c["tier"], c["name"]) == ("llama", "q4"))
    assert q4["requests_in_flight"] == 1, status
    _, health = project.json("health")
    assert health["components"][0]["requests_in_flight"] == 1, health

    code, out, _ = timed(project, "stop")
    stopped_at = time.monotonic()
    completion.join(60)
    assert code == 0, out
    assert completion.status == 200, completion.error
    assert completion.answer["tokens_predicted"] == 60  # every token, not a reset connection
    row = out["components"][0]
    assert row["drain"]["in_flight_at_start"] == 1 and row["drain"]["cut"] == 0, row
    assert row["detail"].startswith("drained (1 request finished"), row
    # The stop ended right after the answer: not the grace period, not a SIGKILL.
    assert stopped_at - completion.ended < 1.5, f"stop ended {stopped_at - completion.ended:.2f}s after the answer"
    assert "killed" not in row["detail"]
    assert not alive(pid) and ports.is_free("127.0.0.1", port)


@pytest.mark.real_engine
def test_an_answer_longer_than_the_drain_deadline_is_cut_and_the_row_says_so(project):
    port = real_env(project, {"q4": {}})["q4"]
    assert project.run("start", timeout=300).returncode == 0
    pid = project.record("q4")["pid"]
    completion = answering(port, 4000)
    code, out, took = timed(project, "stop", "--drain-timeout", "1", "--grace", "1")
    completion.join(30)
    assert code == 0, out
    row = out["components"][0]
    assert row["drain"]["cut"] == 1, row
    assert "1 request cut after the 1s drain deadline" in row["detail"], row
    assert completion.status != 200  # the stop cut it: llama-server never finishes it after SIGTERM
    assert took < 1 + 1 + 6, took  # drain deadline + grace + SIGKILL and the CLI
    assert not alive(pid) and ports.is_free("127.0.0.1", port)


@pytest.mark.real_engine
def test_no_drain_and_the_emergency_stop_do_not_wait_for_answers(project):
    port = real_env(project, {"q4": {}})["q4"]
    assert project.run("start", timeout=300).returncode == 0
    completion = answering(port, 4000)
    code, out, took = timed(project, "stop", "--no-drain", "--grace", "1")
    assert code == 0, out
    assert out["components"][0]["drain"] is None
    assert took < 6, took  # the grace, SIGKILL and the CLI: no drain
    completion.join(30)
    assert completion.status != 200

    assert project.run("start", timeout=300).returncode == 0
    pid = project.record("q4")["pid"]
    completion = answering(port, 4000)
    code, out, took = timed(project, "emergency-stop")
    assert code == 0, out
    assert took < 5, took
    assert not alive(pid)
    completion.join(30)
    assert completion.status != 200


def test_a_server_whose_slots_never_turn_idle_is_drained_until_the_deadline(project):
    project.fake_env({"q4": "--fake-busy-slots 2"})
    assert project.run("start", timeout=60).returncode == 0
    code, out, took = timed(project, "stop", "--drain-timeout", "1")
    assert code == 0, out
    row = out["components"][0]
    assert "2 requests cut after the 1s drain deadline" in row["detail"], row
    assert 1.0 <= row["seconds"] + row["drain"]["waited"] and 1.0 <= took < 5, (took, row)


def test_a_server_without_slots_or_metrics_is_not_waited_on(project):
    project.fake_env({"q4": ""})  # the fake answers 404 there, as an old build does
    assert project.run("start", timeout=60).returncode == 0
    code, out, took = timed(project, "stop", "--drain-timeout", "30")
    assert code == 0, out
    row = out["components"][0]
    assert row["drain"]["reason"] == "the server answers neither /slots nor /metrics", row
    assert row["detail"] == "stopped" and took < 5, (took, row)  # nothing waited for: the row as before


def test_ctrl_c_during_a_drain_ends_it_and_the_stop_goes_on(project):
    project.fake_env({"q4": "--fake-busy-slots 1"})
    assert project.run("start", timeout=60).returncode == 0
    pid = project.record("q4")["pid"]
    stop = project.popen("stop", "--drain-timeout", "60", "--json")
    seen = ""
    for line in stop.stderr:  # progress: "q4  draining: 1 request in flight, 60s left"
        seen += line
        if "draining: 1 request in flight" in line:
            break
    assert "draining" in seen, seen
    began = time.monotonic()
    stop.send_signal(signal.SIGINT)
    out, _ = stop.communicate(timeout=30)
    assert stop.returncode == 0, out
    assert time.monotonic() - began < 5
    row = json.loads(out)["components"][0]
    assert row["drain"]["reason"] == "skipped (Ctrl+C)" and row["action"] == "stopped", row
    assert not alive(pid)
