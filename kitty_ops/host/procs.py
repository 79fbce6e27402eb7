"""Processes: spawn detached, prove identity, signal a process group, wait with a deadline.

PIDs are reused by the kernel, so a PID alone proves nothing. A process is "ours" only when the
PID's start time equals the one recorded at spawn time and its command line still ends with the
arguments kitty-ops passed. (The tail, not the whole line: a script or an `env` shebang re-execs
its interpreter, which changes argv[0] after spawn but keeps the start time and the arguments.)
Every signal this toolkit sends goes through `signal_group`, which refuses anything not proven ours.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import psutil

# psutil derives start times from clock ticks since boot; two reads of one process agree exactly,
# the tolerance only absorbs float formatting through JSON.
_START_TIME_TOLERANCE = 0.01


@dataclasses.dataclass(frozen=True)
class Identity:
    pid: int
    create_time: float
    args: tuple[str, ...]  # for a recorded process: the arguments given; for a live one: its cmdline


class Liveness(str, enum.Enum):
    OURS = "ours"  # alive, start time and command line as recorded
    GONE = "gone"  # no such process (or a zombie waiting to be reaped)
    FOREIGN = "foreign"  # the PID is alive but belongs to another process now


def identity_of(pid: int) -> Identity | None:
    """The identity of a live process, or None when it is gone or a zombie."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return Identity(pid, proc.create_time(), tuple(proc.cmdline()))
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        # Alive but not inspectable (another user's process): certainly not provable as ours.
        return Identity(pid, -1.0, ())


def check(recorded: Identity) -> Liveness:
    current = identity_of(recorded.pid)
    if current is None:
        return Liveness.GONE
    same_start = abs(current.create_time - recorded.create_time) <= _START_TIME_TOLERANCE
    args = tuple(recorded.args)
    same_args = not args or current.args[-len(args):] == args
    if same_start and same_args:
        return Liveness.OURS
    return Liveness.FOREIGN


def spawn_detached(argv: list[str], log_path: Path, cwd: Path | None = None,
                   env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `argv` in its own session (so it outlives this CLI and Ctrl+C in the operator's
    terminal does not reach it), with stdout and stderr appended to `log_path`. No inherited file
    descriptors: a server must not keep the CLI's lock file open."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=cwd, env=env, start_new_session=True, close_fds=True,
        )


def identity_after_spawn(popen: subprocess.Popen) -> Identity | None:
    """Identity of a process just spawned. Popen returns only after exec succeeded, so the
    command line read here is the new program's (a script shows its interpreter first)."""
    return identity_of(popen.pid)


class NotOurs(Exception):
    """Raised instead of signalling a process that cannot be proven ours."""


def signal_group(recorded: Identity, sig: int) -> bool:
    """Send `sig` to the process group led by `recorded`. Returns False when it is already gone.
    Raises NotOurs when the PID now belongs to another process."""
    state = check(recorded)
    if state is Liveness.GONE:
        return False
    if state is Liveness.FOREIGN:
        raise NotOurs(f"pid {recorded.pid} is not the process kitty-ops started")
    try:
        # Our servers are session leaders (start_new_session), so their pgid is their pid.
        os.killpg(recorded.pid, sig)
    except ProcessLookupError:
        return False
    return True


def kill_child_group(popen: subprocess.Popen, wait: float) -> None:
    """SIGKILL the group of our own unreaped child (its PID cannot have been reused) and wait
    briefly; a process stuck in the kernel is left to the caller's report."""
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        popen.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        pass


def reap_if_child(pid: int) -> None:
    """Collect the exit status of our own child so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its parent (init) reaps it


def wait_gone(recorded: Identity, deadline: float, clock: Callable[[], float] = time.monotonic) -> bool:
    """Wait until the recorded process has exited, at most until `deadline` (monotonic seconds).
    Polls quickly at first and more slowly later: most servers exit within milliseconds of
    SIGTERM, a few take seconds."""
    delay = 0.002
    while True:
        reap_if_child(recorded.pid)
        if check(recorded) is not Liveness.OURS:
            return True
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


def exit_description(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def rss_bytes(pid: int) -> int | None:
    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.Error, OSError):
        return None
