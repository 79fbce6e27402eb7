"""What a recorded process is doing right now: its record, whether the PID is still provably
ours, and what its health endpoint answers. Read-only: nothing here signals or removes anything.
`status` and `health` both build their views on this."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import psutil

from kitty_ops.host import probes, procs, records

DEAD_LOG_LINES = 5  # log lines shown for a process that died behind kitty-ops's back


@dataclasses.dataclass(frozen=True)
class Observed:
    name: str
    record: records.EngineRecord | None = None
    bad_record: str = ""  # why the record could not be read
    liveness: procs.Liveness | None = None  # None: no record, nothing to check
    probe: probes.ProbeResult | None = None  # None: not probed (dead, or no health endpoint)
    uptime: float | None = None
    rss_bytes: int | None = None
    suspended: bool = False  # stopped by SIGSTOP or a debugger: alive, answers nothing
    log_tail: tuple[str, ...] = ()  # the end of this run's log, for a process that died

    @property
    def recorded(self) -> bool:
        return self.record is not None or bool(self.bad_record)

    def death(self) -> str:
        """Why a recorded process is not running, in the operator's words."""
        if self.bad_record:
            return f"unreadable record: {self.bad_record}"
        assert self.record is not None
        pid = self.record.pid
        if self.liveness is procs.Liveness.FOREIGN:
            return f"pid {pid} now belongs to another process (ours died; the PID was reused)"
        # The process was detached from the CLI that started it, so no kitty-ops process is its
        # parent: the exit status went to init. The log is what tells how it ended.
        started = f"started {_ago(time.time() - self.record.create_time)} ago; " if self.record.create_time else ""
        return f"pid {pid} is gone ({started}it exited without `kitty-ops stop`)"


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def observe(logs_dir: Path, name: str, prefix: str = records.LLAMA, health_url: str | None = "",
            timeout: float = 1.0) -> Observed:
    """The state of recorded process `name`. `health_url` "" means the record's own url +
    /health, None means the process has no health endpoint (liveness only)."""
    try:
        record = records.load(logs_dir, name, prefix)
    except records.BadRecord as exc:
        return Observed(name, bad_record=str(exc))
    if record is None:
        return Observed(name)
    liveness = procs.check(record.identity)
    if liveness is not procs.Liveness.OURS:
        tail = records.tail(records.log_path(logs_dir, name, prefix), DEAD_LOG_LINES, record.log_offset)
        return Observed(name, record, liveness=liveness, log_tail=tuple(tail))
    url = record.url + "/health" if health_url == "" else health_url
    probe = probes.probe_health(url, timeout=timeout, path="") if url else None
    return Observed(name, record, liveness=liveness, probe=probe,
                    uptime=max(0.0, time.time() - record.create_time),
                    rss_bytes=procs.rss_bytes(record.pid), suspended=_suspended(record.pid))


def _suspended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False
