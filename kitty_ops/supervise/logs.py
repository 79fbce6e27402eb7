"""Log rotation by size for `.logs/llamacpp-*.log` and `.logs/service-*.log`, safe for a server
that keeps writing with O_APPEND and never reopens its log (llama-server has no SIGHUP).

A rename would leave the server writing into the rotated file for ever, and copy-then-truncate
loses what it writes between the copy and the truncate. So:

1. copy the log's first N bytes (everything so far) into a new generation, while the server runs;
2. pause the server's process group (SIGSTOP: proven ours through its identity record, as every
   signal kitty-ops sends) and wait until it is stopped: a write(2) to a regular file completes
   before the stop takes effect, so everything it wrote is in the file now;
3. copy the few bytes written since N, truncate the log to 0, SIGCONT (in a `finally`: the pause
   lasts about a millisecond). What the server writes next lands at the start of the empty log
   (O_APPEND), what it had buffered but not written yet is written after the resume: no line is
   lost, none is in two generations;
4. compress the generation (gzip) and shift the older ones: `<log>.1.gz` newest ... `<log>.<keep>.gz`.

A log whose process is not running is rotated without a pause (nobody writes it). The record's
`log_offset` (where this run's output starts) is moved back by what was rotated away, so the
death tail of `status`/`health` still finds this run's lines.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import signal
import time
from pathlib import Path

import psutil

from kitty_ops.host import procs, records

STOP_WAIT = 1.0  # seconds to wait for the group to stop before giving up this rotation
CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Rotated:
    path: Path
    bytes: int
    paused_ms: float | None  # None: nobody was writing it


def generation(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}.gz")


def _copy(src, dst, start: int, end: int) -> None:
    src.seek(start)
    left = end - start
    while left > 0:
        chunk = src.read(min(CHUNK, left))
        if not chunk:
            break
        dst.write(chunk)
        left -= len(chunk)


def _stopped(pid: int, deadline: float) -> bool:
    """Is `pid` stopped, waiting until `deadline` (monotonic; 0: just look)?"""
    while True:
        try:
            if psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
                return True
        except psutil.Error:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.0005)


def rotate(path: Path, keep: int, writer: procs.Identity | None) -> Rotated | None:
    """Rotate `path` now; `writer`: the process group that writes it (None: nobody). None when
    the writer could not be paused (nothing changed; try again later)."""
    staging = path.with_name(f".{path.name}.rotating")
    paused_ms = None
    with open(path, "r+b") as log, open(staging, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # a log may hold what a server printed: the operator's only
        first = log.seek(0, os.SEEK_END)
        _copy(log, out, 0, first)
        if writer is not None and _stopped(writer.pid, 0):
            writer = None  # stopped already (a debugger, the operator): not writing; leave it stopped
        if writer is not None:
            try:
                if not procs.signal_group(writer, signal.SIGSTOP):
                    writer = None  # it has just exited: nobody writes any more
            except procs.NotOurs:
                writer = None
        if writer is not None:
            began = time.monotonic()
            try:
                if not _stopped(writer.pid, began + STOP_WAIT):
                    out.close()
                    os.unlink(staging)
                    return None
                end = log.seek(0, os.SEEK_END)
                _copy(log, out, first, end)
                log.truncate(0)
            finally:
                try:
                    procs.signal_group(writer, signal.SIGCONT)
                except procs.NotOurs:
                    pass
            paused_ms = (time.monotonic() - began) * 1000
        else:
            end = log.seek(0, os.SEEK_END)
            _copy(log, out, first, end)
            log.truncate(0)
    _shift(path, keep)
    with open(staging, "rb") as raw, gzip.open(generation(path, 1), "wb") as packed:
        shutil.copyfileobj(raw, packed, CHUNK)
    os.chmod(generation(path, 1), 0o600)
    os.unlink(staging)
    return Rotated(path, end, paused_ms)


def _shift(path: Path, keep: int) -> None:
    """<log>.k.gz -> <log>.(k+1).gz, oldest first; beyond `keep` is removed."""
    for n in range(max(keep, 1) + 20, 0, -1):
        older = generation(path, n)
        if not older.exists():
            continue
        if n >= keep:
            older.unlink()
        else:
            os.replace(older, generation(path, n + 1))


def rotate_component(logs_dir: Path, name: str, prefix: str, max_bytes: int, keep: int) -> Rotated | None:
    """Rotate one component's log when it is over `max_bytes` (the caller holds the project lock,
    so no start rewrites the record meanwhile)."""
    path = records.log_path(logs_dir, name, prefix)
    try:
        if max_bytes <= 0 or path.stat().st_size <= max_bytes:
            return None
    except FileNotFoundError:
        return None
    try:
        record = records.load(logs_dir, name, prefix)
    except records.BadRecord:
        record = None
    ours = record is not None and procs.check(record.identity) is procs.Liveness.OURS
    done = rotate(path, keep, record.identity if ours else None)
    if done is not None and record is not None:
        records.save(logs_dir, dataclasses.replace(record, log_offset=max(0, record.log_offset - done.bytes)))
    return done
