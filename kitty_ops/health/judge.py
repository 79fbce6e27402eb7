"""The health report: one verdict per component and one for the stack. Pure: observations in,
levels and words out; run.py gathers the observations, render.py prints them.

Each component gets a monitoring-plugin level (OK, WARNING, CRITICAL, UNKNOWN) and a status word
as a service's own /health would say it (healthy, loading, starting, unhealthy, down, unknown).
The stack's level is the worst component's; UNKNOWN ranks below CRITICAL, because "the API is
down" is what an operator must read first, but above WARNING, since a part nobody could check
may be down.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence
from urllib.parse import urlsplit

from kitty_ops.containers.compose import ContainerState
from kitty_ops.exitcodes import Health as Level
from kitty_ops.host import probes, procs
from kitty_ops.host.observe import Observed
from kitty_ops.host.supervision import BACKOFF, FAILED, ComponentState
from kitty_ops.llama.memory import says_out_of_memory
from kitty_ops.runbooks import Runbook

SEVERITY = (Level.OK, Level.WARNING, Level.UNKNOWN, Level.CRITICAL)  # least to most urgent
STARTING_GRACE = 30.0  # seconds a live process may refuse connections before that is CRITICAL


@dataclasses.dataclass
class Component:
    name: str
    tier: str  # llama | native | compose
    level: Level
    status: str  # healthy | loading | starting | unhealthy | down | unknown
    detail: str
    service: str = ""  # what it calls itself: the llama alias, the compose service
    version: str | None = None  # engine version, or the container's image
    model: str | None = None  # a llama server's model file; a container's image
    uptime: float | None = None  # seconds
    latency: float | None = None  # seconds the health probe took (docker's own probe for containers)
    url: str | None = None
    pid: int | None = None
    container: str | None = None
    dependencies: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> status
    needs: tuple[str, ...] = ()  # names of the components it depends on
    log_tail: list[str] = dataclasses.field(default_factory=list)
    runbook: Runbook | None = None
    requests_in_flight: int | None = None  # a llama server's answers being written, when it says
    supervised: bool = False  # a live `kitty-ops supervise` keeps it up
    supervisor_state: str | None = None  # running | starting | backoff | failed | stopping | stopped
    restarts: int | None = None  # restarts by the supervisor (None: not supervised)
    last_exit: str | None = None  # "killed by SIGKILL", when the supervisor saw one
    crash_history: list[str] = dataclasses.field(default_factory=list)  # the supervisor's exits, oldest first
    ports: tuple[str, ...] = ()  # where it listens: "127.0.0.1:8083"; a container's "127.0.0.1:5432->5432/tcp"
    memory_bytes: int | None = None  # a live process's RSS; a container's memory as the engine counts it
    # What was seen before judging: a process is absent (no record), alive, gone (dead or its PID
    # reused) or bad-record; a container is absent or in the engine's own state (running, exited,
    # created, restarting, paused, dead). `status` tells "stopped" from "died" with it.
    observed: str | None = None
    # A live llama server: what it runs on (kitty_ops.llama.offload's summary: backend, layers,
    # total, devices, cpu_fallback; None when unknown) and whether it was started with --metrics.
    offload: dict | None = None
    metrics: bool | None = None

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["level"] = self.level.name
        data["runbook"] = self.runbook.path if self.runbook else None
        data["latency"] = None if self.latency is None else round(self.latency, 4)
        data["uptime"] = None if self.uptime is None else round(self.uptime, 1)
        del data["needs"]
        return data


def worst(levels: Sequence[Level]) -> Level:
    return max(levels, key=SEVERITY.index, default=Level.OK)


# ------------------------------------------------------------------------ recorded processes

def with_requests(component: Component, in_flight: int | None) -> Component:
    """A healthy llama server's requests in flight (its /slots or /metrics), shown in the detail."""
    component.requests_in_flight = in_flight
    if in_flight:
        component.detail = f"{component.detail}; {in_flight} request{'' if in_flight == 1 else 's'} in flight"
    return component


def from_process(observed: Observed, tier: str, service: str, enabled: bool, url: str | None,
                 failure_runbook: Runbook) -> Component | None:
    """A llama server or native service from its record, process and health probe (`url`: the
    health URL probed, None when it has none). None for a disabled component with no record:
    there is nothing to report."""
    base = Component(observed.name, tier, Level.OK, "healthy", "", service=service, url=url)
    record = observed.record
    if record is not None:
        base.pid, base.version = record.pid, record.engine_version or None
        base.model = record.model or None
        base.ports = address(record.url)
    if not observed.recorded:
        if not enabled:
            return None
        base.observed = "absent"
        return _set(base, Level.CRITICAL, "down", "not running: no record (start it with start-all)",
                    failure_runbook)
    if observed.liveness is not procs.Liveness.OURS:
        base.observed = "bad-record" if observed.bad_record else "gone"
        base.log_tail = list(observed.log_tail)
        detail = observed.death()
        if observed.log_tail:
            detail += f"; last log line: {observed.log_tail[-1].strip()[:200]}"
        return _set(base, Level.CRITICAL, "down", detail, _runbook_for_death(observed, failure_runbook))
    base.uptime, base.memory_bytes, base.observed = observed.uptime, observed.rss_bytes, "alive"
    probe = observed.probe
    suspended = " (the process is suspended: SIGSTOP or a debugger)" if observed.suspended else ""
    if probe is None:  # no health endpoint: alive and provably ours is all there is to know
        if observed.suspended:
            return _set(base, Level.CRITICAL, "unhealthy", "alive but suspended (SIGSTOP or a debugger)",
                        failure_runbook)
        return _set(base, Level.OK, "healthy", f"running (pid {base.pid}; no health endpoint)")
    base.latency = probe.latency
    if probe.health is probes.Health.READY:
        return _set(base, Level.OK, "healthy", "ok")
    if probe.health is probes.Health.LOADING:
        return _set(base, Level.WARNING, "loading", f"{probe.detail or 'loading model'} (HTTP 503)",
                    Runbook.SERVER_TIMEOUT if tier == "llama" else failure_runbook)
    if probe.health is probes.Health.REFUSED and (observed.uptime or 0) < STARTING_GRACE and not suspended:
        return _set(base, Level.WARNING, "starting", "not listening yet (just started)", failure_runbook)
    if probe.health is probes.Health.REFUSED:
        return _set(base, Level.CRITICAL, "unhealthy",
                    f"process alive but its port refuses connections{suspended}", failure_runbook)
    return _set(base, Level.CRITICAL, "unhealthy", f"{probe.detail}{suspended}", failure_runbook)


def with_supervision(component: Component, view: ComponentState | None) -> Component:
    """What a live supervisor says about the component (kitty_ops.host.supervision): a crash
    loop is CRITICAL `failed` with its exit history, never merely "down"; a component waiting
    for its restart is WARNING `backoff`."""
    if view is None:
        return component
    component.supervised = True
    component.supervisor_state = view.state
    component.restarts = view.restarts
    component.last_exit = view.last_exit.what if view.last_exit else None
    component.crash_history = [e.what for e in view.history]
    if view.state == FAILED:
        history = view.crash_history()
        detail = view.detail or f"crash loop; exits: {history}"
        return _set(component, Level.CRITICAL, "failed", detail, Runbook.CRASH_LOOP)
    if view.state == BACKOFF and component.level is not Level.OK:
        return _set(component, Level.WARNING, "backoff",
                    f"{view.detail} (restart {view.restarts + 1} by the supervisor)", component.runbook)
    return component


def address(url: str | None) -> tuple[str, ...]:
    """`http://127.0.0.1:8083/health` -> ("127.0.0.1:8083",); () for no URL or no port."""
    try:
        parts = urlsplit(url or "")
        host, port = parts.hostname, parts.port
    except ValueError:
        return ()
    if not host or not port:
        return ()
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}",)


def _runbook_for_death(observed: Observed, default: Runbook) -> Runbook:
    if says_out_of_memory(observed.log_tail):
        return Runbook.OUT_OF_MEMORY
    if observed.liveness is procs.Liveness.FOREIGN or observed.bad_record:
        return Runbook.STALE_PID
    return default


def _set(component: Component, level: Level, status: str, detail: str,
         runbook: Runbook | None = None) -> Component:
    component.level, component.status, component.detail = level, status, detail
    component.runbook = runbook if level is not Level.OK else None
    return component


# ------------------------------------------------------------------------------- containers

def from_container(service: str, state: ContainerState | None, has_healthcheck: bool,
                   now: float) -> Component:
    """A compose service from its container as the engine reports it, docker's own healthcheck
    included (it runs inside the container every few seconds, so it is fresher than anything a
    cron job could add and costs nothing to read)."""
    base = Component(service, "compose", Level.OK, "healthy", "", service=service)
    if state is None:
        base.observed = "absent"
        return _set(base, Level.CRITICAL, "down", "no container (start it with start-all)",
                    Runbook.CONTAINER_FAILED)
    base.container, base.version = state.id, state.image or None
    base.model, base.ports, base.memory_bytes = state.image or None, state.ports, state.memory_bytes
    base.observed = state.status
    base.latency = state.probe_seconds
    if state.started_epoch and state.status == "running":
        base.uptime = max(0.0, now - state.started_epoch)
    probe = f"; last healthcheck: {state.last_probe}" if state.last_probe else ""
    if state.status == "running":
        if state.health == "healthy" or (not state.health and not has_healthcheck):
            return _set(base, Level.OK, "healthy", "running, healthy" if state.health else "running (no healthcheck)")
        if state.health == "starting":
            return _set(base, Level.WARNING, "starting", f"running, healthcheck starting{probe}",
                        Runbook.CONTAINER_FAILED)
        return _set(base, Level.CRITICAL, "unhealthy", f"running but {state.health or 'not checked'}{probe}",
                    Runbook.CONTAINER_FAILED)
    if state.status == "restarting":
        return _set(base, Level.CRITICAL, "down",
                    f"crash-looping ({state.restarts} restarts, last exit code {state.exit_code})",
                    Runbook.CONTAINER_FAILED)
    if state.status == "paused":
        return _set(base, Level.CRITICAL, "unhealthy", "paused (docker pause)", Runbook.CONTAINER_FAILED)
    return _set(base, Level.CRITICAL, "down", state.describe(), Runbook.CONTAINER_FAILED)


# --------------------------------------------------------------------------------- the stack

def link_dependencies(components: list[Component]) -> None:
    """Fill each component's `dependencies` with the status of what it needs."""
    by_name = {c.name: c for c in components}
    for component in components:
        component.dependencies = {n: (by_name[n].status if n in by_name else "unknown")
                                  for n in component.needs}


def summary(components: Sequence[Component]) -> str:
    """The text after `KITTY <LEVEL> - `: the count, then each component that is not OK."""
    if not components:
        return "no component is enabled"
    healthy = sum(c.level is Level.OK for c in components)
    parts = [f"{healthy}/{len(components)} healthy"]
    bad = [c for c in components if c.level is not Level.OK]
    detailed = len(bad) <= 3  # a status line stays one readable line; the table has the rest
    for grade in reversed(SEVERITY[1:]):
        named = [f"{c.name} {c.status}" + (f" ({_short(c.detail)})" if detailed else "")
                 for c in bad if c.level is grade]
        if named:
            parts.append(f"{grade.name.lower()}: {', '.join(named)}")
    return "; ".join(parts)


def _short(detail: str, limit: int = 80) -> str:
    detail = detail.split("; last")[0]
    return detail if len(detail) <= limit else detail[:limit - 1] + "…"


def perfdata(components: Sequence[Component], warn: float | None, crit: float) -> str:
    """Monitoring-plugin performance data: 'q4_latency'=0.012s;WARN;CRIT;0; for every component
    with a measured probe."""
    fields = []
    for c in components:
        if c.latency is not None:
            label = f"{c.name}_latency".replace("'", "")
            fields.append(f"'{label}'={c.latency:.3f}s;{'' if warn is None else f'{warn:g}'};{crit:g};0;")
    return " ".join(fields)


def counts(components: Sequence[Component]) -> Mapping[str, int]:
    return {level.name: sum(c.level is level for c in components) for level in Level}
