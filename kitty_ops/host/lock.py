"""One lock per project, so two start/stop invocations can never interleave their steps."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator


class LockBusy(Exception):
    def __init__(self, path: Path, holder: str, waited: float):
        super().__init__(f"another kitty-ops run holds {path} ({holder}); waited {waited:.1f}s")
        self.path = path
        self.holder = holder


def project_lock(logs_dir: Path) -> Path:
    """The lock every start, stop, backup and restore of one project takes."""
    return logs_dir / "kitty-ops.lock"


_HELD_HERE: set[Path] = set()  # locks this process holds: taking one again is a no-op


@contextlib.contextmanager
def held(path: Path, timeout: float, what: str) -> Iterator[None]:
    """flock(2) on `path`, waiting up to `timeout` seconds. The kernel drops the lock when the
    holder dies, so a crashed run never leaves the project locked. Re-entrant within one process
    (a restore holds the lock through the stop and start it runs)."""
    key = path.resolve()
    if key in _HELD_HERE:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= timeout:
                    raise LockBusy(path, _holder(fd), waited) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: kitty-ops {what}\n".encode(), 0)
        _HELD_HERE.add(key)
        try:
            yield
        finally:
            _HELD_HERE.discard(key)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown holder"
    except OSError:
        return "unknown holder"
