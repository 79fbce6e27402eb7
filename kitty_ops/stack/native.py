"""Native services of the stack (the images service: its HTTP API and its RQ worker).

They run like the llama servers: spawned detached in their own session, output appended to
`.logs/service-<name>.log`, an identity record in `.logs/service-<name>.json` so that a later
stop signals only a process it can prove it started. Readiness is the service's health URL
answering 200, or, for a worker with no HTTP side, staying alive for its settle time.
"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
from datetime import datetime, timezone

from kitty_ops.config import NativeService, Settings
from kitty_ops.host import probes, procs, records
from kitty_ops.llama.lifecycle import KILL_WAIT, LOG_TAIL_LINES, terminate
from kitty_ops.outcomes import Action, Outcome, Progress
from kitty_ops.runbooks import Runbook

PREFIX = records.SERVICE


@dataclasses.dataclass
class Launched:
    service: NativeService
    record: records.EngineRecord
    popen: subprocess.Popen | None  # None: found already running (a previous start-all)


def _port_and_url(service: NativeService) -> tuple[int, str]:
    if not service.health_url:
        return 0, ""
    base = service.health_url.split("/", 3)
    port = base[2].rsplit(":", 1)[-1] if len(base) > 2 else ""
    return (int(port) if port.isdigit() else 0), "/".join(base[:3])


def outcome(service: NativeService, action: Action, ok: bool, pid: int | None = None,
            seconds: float = 0.0, detail: str = "", **extra) -> Outcome:
    port, url = _port_and_url(service)
    return Outcome(service.name, action, ok, port, url, pid, seconds, detail, component="native", **extra)


def running(settings: Settings, service: NativeService) -> records.EngineRecord | None:
    """The record of a live instance that is provably ours; stale records are removed unsignalled."""
    try:
        record = records.load(settings.logs_dir, service.name, PREFIX)
    except records.BadRecord:
        record = None
    if record is None:
        records.remove(settings.logs_dir, service.name, PREFIX)
        return None
    if procs.check(record.identity) is not procs.Liveness.OURS:
        records.remove(settings.logs_dir, service.name, PREFIX)
        return None
    return record


def spawn(settings: Settings, service: NativeService, progress: Progress) -> Launched | Outcome:
    """Start the process; an Outcome when it could not even be started."""
    log = records.log_path(settings.logs_dir, service.name, PREFIX)
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"\n=== kitty-ops {stamp}: starting {service.name}: {service.argv[0]} ...\n")
        offset = handle.tell()
    try:
        popen = procs.spawn_detached(list(service.argv), log, cwd=service.cwd)
    except OSError as exc:
        return outcome(service, Action.FAILED, False, detail=f"cannot run {service.argv[0]!r}: {exc.strerror}",
                       runbook=Runbook.NATIVE_SERVICE)
    try:
        identity = procs.identity_after_spawn(popen)
        if identity is None:
            code = popen.wait(timeout=KILL_WAIT)
            return outcome(service, Action.FAILED, False, popen.pid,
                           detail=f"exited at once ({procs.exit_description(code)})",
                           log_tail=records.tail(log, LOG_TAIL_LINES, offset), runbook=Runbook.NATIVE_SERVICE)
        port, url = _port_and_url(service)
        record = records.EngineRecord(
            name=service.name, pid=popen.pid, create_time=identity.create_time,
            cmdline=list(identity.args), argv=list(service.argv), port=port, url=url, model="",
            mmproj=None, engine_version="", binary=service.argv[0], log=str(log), log_offset=offset,
            started_at=time.time(), prefix=PREFIX)
        records.save(settings.logs_dir, record)
    except BaseException:
        procs.kill_child_group(popen, KILL_WAIT)
        records.remove(settings.logs_dir, service.name, PREFIX)
        raise
    progress.event(service.name, f"started pid {popen.pid}")
    return Launched(service, record, popen)


def wait_ready(settings: Settings, launched: Launched, deadline: float,
               cancel: threading.Event, progress: Progress) -> Outcome:
    service, record = launched.service, launched.record
    log_tail = lambda: records.tail(records.log_path(settings.logs_dir, service.name, PREFIX),
                                    LOG_TAIL_LINES, record.log_offset)
    started = time.monotonic()

    def wait_exit(seconds: float) -> str | None:
        if launched.popen is not None:
            try:
                return procs.exit_description(launched.popen.wait(timeout=seconds))
            except subprocess.TimeoutExpired:
                return None
        return "exited" if procs.wait_gone(record.identity, time.monotonic() + seconds) else None

    if service.health_url:
        result = probes.wait_ready(record.url, deadline, wait_exit, cancel, path=service.health_url[len(record.url):])
        seconds = result.seconds
        verdict, detail = result.outcome, result.detail
    else:
        # A worker has no endpoint: ready when it is still alive after its settle time.
        settle_until = min(deadline, started + service.settle)
        died = None
        while died is None and time.monotonic() < settle_until and not cancel.is_set():
            died = wait_exit(min(0.05, max(0.0, settle_until - time.monotonic())))
        seconds = time.monotonic() - started
        if died is not None:
            verdict, detail = probes.Outcome.DIED, died
        elif cancel.is_set():
            verdict, detail = probes.Outcome.CANCELLED, "cancelled"
        else:
            verdict, detail = probes.Outcome.READY, "alive"
    if verdict is probes.Outcome.READY:
        progress.event(service.name, f"ready after {seconds:.1f}s")
        return outcome(service, Action.STARTED, True, record.pid, seconds, "ready")
    if verdict is probes.Outcome.CANCELLED:
        return outcome(service, Action.ROLLED_BACK, False, record.pid, seconds, "cancelled")
    what = f"exited while starting ({detail})" if verdict is probes.Outcome.DIED else detail
    return outcome(service, Action.FAILED, False, record.pid, seconds, what, log_tail=log_tail(),
                   runbook=Runbook.NATIVE_SERVICE)


def stop(settings: Settings, service_name: str, progress: Progress,
         popen: subprocess.Popen | None = None) -> Outcome:
    try:
        record = records.load(settings.logs_dir, service_name, PREFIX)
    except records.BadRecord as exc:
        records.remove(settings.logs_dir, service_name, PREFIX)
        return Outcome(service_name, Action.NOT_RUNNING, True, 0, "", detail=f"unreadable record removed ({exc})",
                       component="native")
    if record is None:
        return Outcome(service_name, Action.NOT_RUNNING, True, 0, "", detail="not running", component="native")
    if popen is None and procs.check(record.identity) is not procs.Liveness.OURS:
        records.remove(settings.logs_dir, service_name, PREFIX)
        return Outcome(service_name, Action.NOT_RUNNING, True, record.port, record.url, record.pid,
                       detail=f"stale record removed (pid {record.pid} is not ours; not signalled)",
                       runbook=Runbook.STALE_PID, component="native")
    result = terminate(settings, record, popen, progress)
    result.component = "native"
    return result
