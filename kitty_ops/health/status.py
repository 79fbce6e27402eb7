"""`kitty-ops status`: one row per component of the stack (llama servers, native services,
containers), the first thing an operator types, as `docker compose ps` is for compose.

It is built on health's observation (run.run, no lock: status only reads, and never waits for a
cron check) and translated here, purely, into what an operator asks first: is it running (STATE)
and does it answer (HEALTH). Health judges; status reports, so it also names what health leaves
out: servers, services and the container tier that are configured but disabled. The operator's
intent (kitty_ops.host.desired) tells a component stopped on purpose from one that died: a
component that is not running reads `stopped` when the last word was "down", `down` when it was
"up", and `skipped` when the stack was started without it (--only, --skip, --no-compose).

STATE: running | starting | stopped | down | backoff | failed | exited | created | restarting |
paused | disabled | skipped | unknown. HEALTH: healthy | loading | starting | unhealthy | `-`
(nothing to ask: not running, or no verdict). A live llama server also shows what it runs on
(OFFLOAD: `cpu`, `metal 81/81`, `cuda 20/81`, from its record or log) and, when it was started
without --metrics, says so in its detail.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from kitty_ops.config import Settings
from kitty_ops.health import judge
from kitty_ops.health.judge import Component
from kitty_ops.health.run import Report
from kitty_ops.host.desired import DOWN, UP, Intent

PROBE_TIMEOUT = 1.0  # seconds each probe may take: a healthy answer takes milliseconds
DEADLINE = 5.0  # the whole look, docker included; a part past it reads `unknown`

ALIVE = ("healthy", "loading", "starting", "unhealthy")  # health words of a live process or container
NO_HEALTH = "-"
AS_LEFT = ("stopped", "skipped", "disabled")  # not running, as the operator wants: no runbook to read


@dataclasses.dataclass
class Row:
    tier: str  # llama | native | compose
    name: str
    state: str  # see the module docstring
    health: str  # healthy | loading | starting | unhealthy | -
    detail: str = ""
    service: str = ""  # the llama alias, the compose service
    pid: int | None = None
    container: str | None = None  # the id the engine reports (the table shows 12 characters)
    ports: tuple[str, ...] = ()
    uptime: float | None = None  # seconds
    memory_bytes: int | None = None  # RSS of a process, a container's memory as the engine counts it
    model: str | None = None  # a llama server's model file, a container's image
    engine: str | None = None  # the llama-server version
    intent: str | None = None  # the operator's last word: up | down | None (never said)
    requests_in_flight: int | None = None
    supervised: bool = False
    supervisor_state: str | None = None
    restarts: int | None = None  # by the supervisor (None: not supervised)
    last_exit: str | None = None  # "killed by SIGKILL"
    crash_history: list[str] = dataclasses.field(default_factory=list)
    runbook: str | None = None  # what to read when it is not as the operator left it
    offload: dict | None = None  # a live llama server: backend, layers, total, devices (kitty_ops.llama.offload)
    metrics: bool | None = None  # a live llama server: started with --metrics (a /metrics to scrape)

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["ports"] = list(self.ports)
        data["uptime"] = None if self.uptime is None else round(self.uptime, 1)
        return data


@dataclasses.dataclass
class Status:
    rows: list[Row]
    checked_at: float  # wall clock, time.time()
    seconds: float  # how long the look took
    notes: list[str] = dataclasses.field(default_factory=list)


def build(report: Report, settings: Settings, intents: Mapping[str, Intent]) -> Status:
    return Status(rows(report.components, settings, intents), report.checked_at, report.seconds,
                  list(report.notes))


def rows(components: Sequence[Component], settings: Settings, intents: Mapping[str, Intent]) -> list[Row]:
    """Every component, tier by tier (llama in configuration order, native, compose), with the
    configured but disabled ones where they belong."""
    started_any = any(i.want == UP for i in intents.values())
    found = {f"{c.tier}:{c.name}": c for c in components}
    result: list[Row] = []

    def add(component: Component, disabled_by: str = "") -> None:
        row = from_component(component, intents.get(f"{component.tier}:{component.name}"), started_any)
        if disabled_by:  # running although configured off: say both
            row.detail = f"disabled ({disabled_by}) but recorded; {row.detail}".rstrip("; ")
        result.append(row)

    def rest_of(tier: str) -> None:
        """The tier's other components, in the order health found them (a recorded server no
        longer configured; the containers)."""
        for key in [k for k, c in found.items() if c.tier == tier]:
            add(found.pop(key))

    for spec in settings.servers:
        component = found.pop(f"llama:{spec.name}", None)
        if component is not None:
            add(component, "" if spec.enabled else f"{spec.var_prefix}ENABLED=false")
        elif not spec.enabled:
            result.append(Row("llama", spec.name, "disabled", NO_HEALTH, f"{spec.var_prefix}ENABLED=false",
                              service=spec.alias, ports=judge.address(spec.url), model=str(spec.model)))
    rest_of("llama")

    for service in settings.images.services:
        component = found.pop(f"native:{service.name}", None)
        if component is not None:
            add(component, "" if settings.images.enabled else "IMAGES_SERVICE_ENABLED=false")
        elif not settings.images.enabled:
            result.append(Row("native", service.name, "disabled", NO_HEALTH, "IMAGES_SERVICE_ENABLED=false",
                              service=service.name, ports=judge.address(service.health_url)))
    rest_of("native")

    if not settings.compose_enabled:
        result.append(Row("compose", "compose", "disabled", NO_HEALTH,
                          f"KITTY_COMPOSE_ENABLED=false (project {settings.compose.project})"))
    rest_of("compose")
    for component in list(found.values()):  # a tier this table does not know yet: shown, not lost
        add(component)
    return result


def from_component(c: Component, intent: Intent | None, started_any: bool) -> Row:
    """One component as health judged it, in status's words."""
    state, health, detail = _words(c, intent, started_any)
    if c.metrics is False and state in ("running", "starting"):
        detail = "; ".join(d for d in (detail, NO_METRICS) if d)
    return Row(c.tier, c.name, state, health, detail, service=c.service, pid=c.pid, container=c.container,
               ports=tuple(c.ports), uptime=c.uptime, memory_bytes=c.memory_bytes, model=c.model,
               engine=None if c.tier == "compose" else c.version,  # a container's version is its image
               intent=intent.want if intent else None, requests_in_flight=c.requests_in_flight, supervised=c.supervised,
               supervisor_state=c.supervisor_state, restarts=c.restarts, last_exit=c.last_exit,
               crash_history=list(c.crash_history), offload=c.offload, metrics=c.metrics,
               runbook=c.runbook.path if c.runbook and state not in AS_LEFT else None)


def _words(c: Component, intent: Intent | None, started_any: bool) -> tuple[str, str, str]:
    """(STATE, HEALTH, detail)."""
    if c.status in ("failed", "backoff", "unknown"):  # the supervisor's word, or no verdict at all
        return c.status, NO_HEALTH, c.detail
    if c.status in ALIVE and c.observed not in ("paused", "restarting"):
        state = "starting" if c.status in ("loading", "starting") else "running"
        return state, c.status, _quiet(c.detail)
    if c.observed in ("paused", "created", "restarting"):  # the engine's own words
        return c.observed, c.status if c.status in ALIVE else NO_HEALTH, c.detail
    # Not running. Why, and whether that is what the operator asked for:
    asked_down = intent is not None and intent.want == DOWN
    asked_up = intent is not None and intent.want == UP
    if c.observed == "absent":
        if asked_up:
            return "down", NO_HEALTH, f"wanted up (by `{intent.by}`) but {c.detail}"
        if asked_down:
            return "stopped", NO_HEALTH, f"stopped by `{intent.by}`"
        if started_any:
            return "skipped", NO_HEALTH, "left out of the last start (--only, --skip, --no-compose)"
        return "stopped", NO_HEALTH, "not started"
    if c.observed in ("exited", "dead"):
        return ("stopped" if asked_down else "exited"), NO_HEALTH, c.detail
    if asked_down and c.observed == "gone":  # it died after the operator said "down"
        return "stopped", NO_HEALTH, c.detail
    return "down", NO_HEALTH, c.detail  # recorded, expected, dead (or its record unreadable)


NO_METRICS = "no /metrics (start with --metrics)"  # nothing for Prometheus to scrape: worth a word, no more
QUIET = {"ok": "", "running, healthy": "", "running (no healthcheck)": "no healthcheck"}


def _quiet(detail: str) -> str:
    """A live component's detail without what its STATE and HEALTH columns already say."""
    if detail in QUIET:
        return QUIET[detail]
    if detail.startswith("ok; "):  # "ok; 2 requests in flight"
        return detail[len("ok; "):]
    if detail.startswith("running (pid ") and detail.endswith("; no health endpoint)"):
        return "no health endpoint"
    return detail
