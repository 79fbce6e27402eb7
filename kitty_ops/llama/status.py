"""`kitty-ops status`: what each server is doing, from its record, its process and its /health,
and for a healthy one how many requests it is answering (its /slots or /metrics).

Probes run concurrently with a short timeout each, so status stays fast with every server up
and bounded when one hangs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum

from kitty_ops.config import Settings
from kitty_ops.host import probes, procs, records, supervision
from kitty_ops.host.observe import observe
from kitty_ops.llama import drain

PROBE_TIMEOUT = 1.0


class State(str, enum.Enum):
    STOPPED = "stopped"  # no record
    STARTING = "starting"  # ours, alive, not answering 200 yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # ours, alive, /health answers an error or times out
    DEAD = "dead"  # recorded, but the process is gone or the PID is someone else's now
    BACKOFF = "backoff"  # down; the supervisor restarts it after its backoff delay
    FAILED = "failed"  # crash loop: the supervisor gave up until `kitty-ops restart NAME`


@dataclasses.dataclass
class ServerStatus:
    name: str
    enabled: bool
    state: State
    port: int | None
    url: str | None
    pid: int | None = None
    uptime_s: float | None = None
    rss_bytes: int | None = None
    model: str | None = None
    engine_version: str | None = None
    detail: str = ""
    requests_in_flight: int | None = None  # what /slots or /metrics says; None: it cannot say
    supervised: bool = False  # a live `kitty-ops supervise` keeps it up
    supervisor_state: str | None = None  # the supervisor's word (kitty_ops.host.supervision)
    restarts: int | None = None
    last_exit: dict | None = None  # {"what": "killed by SIGKILL", "code": None, "signal": 9, "at": ...}
    crash_history: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return data


def collect(settings: Settings) -> list[ServerStatus]:
    names = [s.name for s in settings.servers]
    names += [n for n in records.recorded_names(settings.logs_dir) if n not in names]
    supervisor = supervision.live(settings.logs_dir)
    views = supervisor.components if supervisor else {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        return list(pool.map(lambda n: _supervised(_one(settings, n), views.get(f"llama:{n}")), names))


def _supervised(status: ServerStatus, view: supervision.ComponentState | None) -> ServerStatus:
    if view is None:
        return status
    status.supervised, status.supervisor_state, status.restarts = True, view.state, view.restarts
    last = view.last_exit
    status.last_exit = dataclasses.asdict(last) if last else None
    status.crash_history = [e.what for e in view.history]
    if view.state == supervision.FAILED:
        status.state, status.detail = State.FAILED, view.detail
    elif view.state == supervision.BACKOFF and status.state in (State.STOPPED, State.DEAD):
        status.state, status.detail = State.BACKOFF, view.detail
    return status


def _one(settings: Settings, name: str) -> ServerStatus:
    spec = settings.server(name)
    enabled = bool(spec and spec.enabled)
    base = ServerStatus(name, enabled, State.STOPPED, spec.port if spec else None,
                        spec.url if spec else None,
                        model=str(spec.model) if spec else None)
    seen = observe(settings.logs_dir, name, timeout=PROBE_TIMEOUT)
    if seen.bad_record:
        base.state, base.detail = State.DEAD, f"unreadable record: {seen.bad_record}"
        return base
    record = seen.record
    if record is None:
        base.detail = "" if enabled else "disabled"
        return base
    base.pid, base.port, base.url = record.pid, record.port, record.url
    base.model, base.engine_version = record.model, record.engine_version
    if seen.liveness is not procs.Liveness.OURS:
        base.state = State.DEAD
        base.detail = (f"pid {record.pid} has exited" if seen.liveness is procs.Liveness.GONE
                       else f"pid {record.pid} now belongs to another process")
        if seen.log_tail:
            base.detail += f"; last log line: {seen.log_tail[-1][:160]}"
        return base
    base.uptime_s = round(seen.uptime or 0.0, 1)
    base.rss_bytes = seen.rss_bytes
    probe = seen.probe
    if probe.health is probes.Health.READY:
        base.state = State.HEALTHY
        base.requests_in_flight = drain.in_flight(record.url, PROBE_TIMEOUT, spec.auth if spec else None)
        if base.requests_in_flight:
            base.detail = f"{base.requests_in_flight} request{'' if base.requests_in_flight == 1 else 's'} in flight"
    elif probe.health in (probes.Health.LOADING, probes.Health.REFUSED):
        base.state, base.detail = State.STARTING, probe.detail
    else:
        base.state, base.detail = State.UNHEALTHY, probe.detail
    return base
