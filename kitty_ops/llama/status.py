"""`kitty-ops status`: what each server is doing, from its record, its process and its /health.

Probes run concurrently with a short timeout each, so status stays fast with every server up
and bounded when one hangs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum

from kitty_ops.config import Settings
from kitty_ops.host import probes, procs, records
from kitty_ops.host.observe import observe

PROBE_TIMEOUT = 1.0


class State(str, enum.Enum):
    STOPPED = "stopped"  # no record
    STARTING = "starting"  # ours, alive, not answering 200 yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # ours, alive, /health answers an error or times out
    DEAD = "dead"  # recorded, but the process is gone or the PID is someone else's now


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

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return data


def collect(settings: Settings) -> list[ServerStatus]:
    names = [s.name for s in settings.servers]
    names += [n for n in records.recorded_names(settings.logs_dir) if n not in names]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        return list(pool.map(lambda n: _one(settings, n), names))


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
    elif probe.health in (probes.Health.LOADING, probes.Health.REFUSED):
        base.state, base.detail = State.STARTING, probe.detail
    else:
        base.state, base.detail = State.UNHEALTHY, probe.detail
    return base
