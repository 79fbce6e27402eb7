"""Death watchers (kitty_ops.supervise.watch): our own child through waitpid (with the signal),
an adopted process through a pidfd or the poll, and the macOS kqueue path with a fake kqueue (it
cannot run on Linux; unverified on a real Mac)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from kitty_ops.host import procs
from kitty_ops.supervise import watch


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


def died_within(method, seconds=5.0, sig=signal.SIGKILL):
    child = sleeper()
    identity = procs.identity_after_spawn(child)
    got: list[watch.Death] = []
    done = threading.Event()
    used = watch.watch(identity, child if method == "waitpid" else None,
                       lambda d: (got.append(d), done.set()), poll=0.01, method=method)
    time.sleep(0.1)
    killed = time.monotonic()
    child.send_signal(sig)
    assert done.wait(seconds), f"{method}: no death reported"
    if method != "waitpid":
        child.wait(5)
    return used, got[0], got[0].at - killed


def test_own_child_reports_the_signal_at_once():
    used, death, latency = died_within("waitpid")
    assert used == "waitpid" and death.signal == 9 and death.description == "killed by SIGKILL"
    assert latency < 0.05


@pytest.mark.skipif(not hasattr(__import__("os"), "pidfd_open"), reason="pidfd is Linux-only")
def test_adopted_process_through_a_pidfd():
    used, death, latency = died_within("pidfd")
    assert used == "pidfd" and death.signal is None and "status unknown" in death.description
    assert latency < 0.1


def test_adopted_process_through_the_poll():
    used, death, latency = died_within("poll")
    assert used == "poll" and latency < 0.2


def test_a_reused_pid_is_reported_gone_not_watched():
    child = sleeper()
    real = procs.identity_after_spawn(child)
    impostor = procs.Identity(real.pid, real.create_time + 100, real.args)
    got = threading.Event()
    watch.watch(impostor, None, lambda d: got.set(), poll=0.01, method="poll")
    assert got.wait(2)
    child.kill()
    child.wait(5)


def test_method_choice():
    identity = procs.Identity(1, 0.0, ())  # init: not our child
    assert watch.method_for(identity, None, has_pidfd=True, has_kqueue=False) == "pidfd"
    assert watch.method_for(identity, None, has_pidfd=False, has_kqueue=True) == "kqueue"
    assert watch.method_for(identity, None, has_pidfd=False, has_kqueue=False) == "poll"


class FakeKqueueModule:
    """select's kqueue API as macOS has it: kevent registration, then control() returning the
    NOTE_EXIT event when the process ends."""

    KQ_FILTER_PROC, KQ_EV_ADD, KQ_EV_ONESHOT, KQ_NOTE_EXIT = -5, 1, 16, 0x80000000

    def __init__(self, exits_after: float):
        self.exits_after = exits_after
        self.registered = []

    def kevent(self, ident, filter, flags, fflags):  # noqa: A002 (select's own names)
        return {"ident": ident, "filter": filter, "flags": flags, "fflags": fflags}

    def kqueue(self):
        module = self

        class Queue:
            started = time.monotonic()

            def control(self, changes, max_events, timeout=None):
                if changes:
                    module.registered.extend(changes)
                    return []
                left = module.exits_after - (time.monotonic() - self.started)
                if left > (timeout or 0):
                    time.sleep(timeout or 0)
                    return []
                time.sleep(max(0.0, left))
                return [module.registered[0]]

            def close(self):
                module.closed = True

        return Queue()


def test_kqueue_path_registers_note_exit_for_the_pid_and_reports_the_exit():
    child = sleeper()
    identity = procs.identity_after_spawn(child)
    fake = FakeKqueueModule(exits_after=0.3)
    try:
        death = watch._by_kqueue(identity, None, 0.05, threading.Event(), kq_module=fake)
    finally:
        child.kill()
        child.wait(5)
    assert fake.registered == [{"ident": identity.pid, "filter": fake.KQ_FILTER_PROC,
                                "flags": fake.KQ_EV_ADD | fake.KQ_EV_ONESHOT, "fflags": fake.KQ_NOTE_EXIT}]
    assert death is not None and death.how == "kqueue" and fake.closed
