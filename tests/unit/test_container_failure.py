"""stack._failure: how a container that is not coming up healthy is described, and the exit
code of a crash-loop taken from the die event once a restart has reset docker's."""

from __future__ import annotations

import io
import json

from kitty_ops.containers.compose import ContainerState
from kitty_ops.stack.run import _ContainerWatch, _failure


def state(status: str, exit_code: int = 0, restarts: int = 0, health: str = "") -> ContainerState:
    return ContainerState("redis", "abc", status, health, exit_code, restarts, "")


def test_exited_and_one_shot():
    assert _failure(state("exited", 3), 0, False) == "the container exited with code 3 while starting"
    assert _failure(state("exited", 0), 0, True) is None  # a one-shot that finished well


def test_crash_loop_reports_the_die_events_code_when_inspect_has_reset_it():
    running_again = state("running", exit_code=0, restarts=1)
    assert _failure(running_again, 0, False, last_exit=3) == \
        "the container is crash-looping (restarted 1 time(s), exit code 3)"
    assert _failure(state("restarting", exit_code=3, restarts=2), 0, False, last_exit=None) == \
        "the container is crash-looping (restarted 2 time(s), exit code 3)"
    # Inspect saw the restart before the die event arrived: wait for the event, unless none can come.
    assert _failure(running_again, 0, False, last_exit=None, events_live=True) is None
    assert _failure(running_again, 0, False, last_exit=None, events_live=False) == \
        "the container is crash-looping (restarted 1 time(s), exit code 0)"


def test_unhealthy_and_still_starting():
    assert "unhealthy" in _failure(state("running", health="unhealthy"), 0, False)
    assert _failure(state("running", health="starting"), 0, False) is None


def test_die_events_record_the_exit_code_per_service():
    watch = _ContainerWatch.__new__(_ContainerWatch)  # only the event parsing, no docker
    watch.last_exit = {}
    die = {"status": "die", "Action": "die", "Actor": {"Attributes": {"com.docker.compose.service": "redis",
                                                                     "exitCode": "3"}}}
    for line in io.StringIO(json.dumps(die) + "\n" + '{"status": "start", "Actor": {"Attributes": {}}}\nnot json\n'):
        watch._note_exit(line)
    assert watch.last_exit == {"redis": 3}
