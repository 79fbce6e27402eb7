"""Noticing that a supervised process ended, as soon as the platform allows, each by a thread
that blocks (no busy loop) and calls back once:

- our own child (spawned by this supervisor, or by the start it ran): `waitpid`, which returns
  the moment it ends, with the exit code or the signal;
- an adopted process (started by an earlier start-all or a supervisor that died): on Linux a
  pidfd (`pidfd_open`, Linux 5.3+), readable when the process ends; on macOS and the BSDs a
  kqueue EVFILT_PROC/NOTE_EXIT event; else a poll of its identity every `poll` seconds. Not
  being its parent, the supervisor cannot learn its exit status: the log tells.

The macOS kqueue path cannot run on the Linux machines the tests run on: it is exercised by a
unit test with a fake kqueue (tests/unit/test_supervise_watch.py), and is unverified on a Mac.

Identity first: a pidfd or kevent is only taken after the PID proves to be the recorded process
(start time and arguments), and checked again after, so a reused PID is never watched.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import subprocess
import threading
import time
from typing import Callable

import psutil

from kitty_ops.host import procs


@dataclasses.dataclass(frozen=True)
class Death:
    description: str  # "killed by SIGKILL", "exited with status 1", "exited (status unknown: not our child)"
    code: int | None = None
    signal: int | None = None
    how: str = ""  # waitpid | pidfd | kqueue | poll
    at: float = 0.0  # time.monotonic() when noticed


def from_returncode(returncode: int, how: str) -> Death:
    if returncode < 0:
        return Death(procs.exit_description(returncode), None, -returncode, how, time.monotonic())
    return Death(procs.exit_description(returncode), returncode, None, how, time.monotonic())


UNKNOWN_STATUS = "exited (status unknown: not the supervisor's child; see its log)"


def method_for(identity: procs.Identity, popen: subprocess.Popen | None,
               has_pidfd: bool | None = None, has_kqueue: bool | None = None) -> str:
    """Which way `identity` is watched (pure apart from the parent lookup)."""
    if popen is not None or _is_our_child(identity.pid):
        return "waitpid"
    if has_pidfd if has_pidfd is not None else hasattr(os, "pidfd_open"):
        return "pidfd"
    if has_kqueue if has_kqueue is not None else hasattr(select, "kqueue"):
        return "kqueue"
    return "poll"


def _is_our_child(pid: int) -> bool:
    try:
        return psutil.Process(pid).ppid() == os.getpid()
    except psutil.Error:
        return False


def watch(identity: procs.Identity, popen: subprocess.Popen | None, on_death: Callable[[Death], None],
          poll: float = 0.05, stop: threading.Event | None = None, method: str | None = None) -> str:
    """Start a daemon thread that calls `on_death` once when the process ends (not when `stop`
    is set first). Returns the method used."""
    stop = stop or threading.Event()
    method = method or method_for(identity, popen)
    target = {"waitpid": _by_waitpid, "pidfd": _by_pidfd, "kqueue": _by_kqueue, "poll": _by_poll}[method]

    def run() -> None:
        death = target(identity, popen, poll, stop)
        if death is not None and not stop.is_set():
            on_death(death)

    threading.Thread(target=run, name=f"watch-{identity.pid}", daemon=True).start()
    return method


def _by_waitpid(identity, popen, poll, stop) -> Death | None:
    if popen is not None:
        return from_returncode(popen.wait(), "waitpid")
    try:
        _, status = os.waitpid(identity.pid, 0)
    except ChildProcessError:  # reaped by someone else in this process: it did end
        return Death("exited (status collected elsewhere)", how="waitpid", at=time.monotonic())
    return from_returncode(os.waitstatus_to_exitcode(status), "waitpid")


def _by_pidfd(identity, popen, poll, stop) -> Death | None:
    try:
        fd = os.pidfd_open(identity.pid)
    except ProcessLookupError:
        return Death(UNKNOWN_STATUS, how="pidfd", at=time.monotonic())
    except OSError:  # a kernel without pidfd (ENOSYS), or not permitted: poll instead
        return _by_poll(identity, popen, poll, stop)
    try:
        if procs.check(identity) is not procs.Liveness.OURS:  # the pidfd may be of a reused PID
            return Death(UNKNOWN_STATUS, how="pidfd", at=time.monotonic())
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not stop.is_set():
            if poller.poll(500):  # readable: the process has ended
                return Death(UNKNOWN_STATUS, how="pidfd", at=time.monotonic())
        return None
    finally:
        os.close(fd)


def _by_kqueue(identity, popen, poll, stop, kq_module=select) -> Death | None:
    """macOS: EVFILT_PROC with NOTE_EXIT on the pid (unverified on a real Mac; unit-tested with
    a fake)."""
    try:
        queue = kq_module.kqueue()
    except OSError:
        return _by_poll(identity, popen, poll, stop)
    try:
        event = kq_module.kevent(identity.pid, filter=kq_module.KQ_FILTER_PROC,
                                 flags=kq_module.KQ_EV_ADD | kq_module.KQ_EV_ONESHOT,
                                 fflags=kq_module.KQ_NOTE_EXIT)
        try:
            queue.control([event], 0, 0)
        except ProcessLookupError:  # ESRCH: already gone
            return Death(UNKNOWN_STATUS, how="kqueue", at=time.monotonic())
        if procs.check(identity) is not procs.Liveness.OURS:
            return Death(UNKNOWN_STATUS, how="kqueue", at=time.monotonic())
        while not stop.is_set():
            if queue.control(None, 1, 0.5):
                return Death(UNKNOWN_STATUS, how="kqueue", at=time.monotonic())
        return None
    finally:
        queue.close()


def _by_poll(identity, popen, poll, stop) -> Death | None:
    while not stop.is_set():
        if procs.check(identity) is not procs.Liveness.OURS:
            return Death(UNKNOWN_STATUS, how="poll", at=time.monotonic())
        stop.wait(poll)
    return None


def signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
