"""`kitty-ops health`: observe every enabled component at once and judge it (judge.py).

Every probe has its own timeout for connect and read, and the whole run one deadline: a probe
still out at the deadline makes its component UNKNOWN and the check returns anyway (its threads
are daemons, so a hung socket never holds the process). Nothing here changes anything: no
record is removed, no process signalled, no container touched. A lock keeps cron runs from
piling up behind one that hangs (check); `kitty-ops status` builds its table on the same
observation without the lock (run), since an operator's look must never wait for cron's.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Callable

from kitty_ops.config import Settings
from kitty_ops.containers import outline
from kitty_ops.containers.compose import Compose, ComposeError, StackModel
from kitty_ops.exitcodes import Health as Level
from kitty_ops.health import judge
from kitty_ops.health.judge import Component
from kitty_ops.host import lock, records, supervision
from kitty_ops.host.observe import observe
from kitty_ops.llama import drain, offload, verify
from kitty_ops.runbooks import Runbook
from kitty_ops.stack import graph

# The docker CLI calls must be finished (or killed) before the deadline, so no child outlives us.
DOCKER_MARGIN = 0.15


@dataclasses.dataclass
class Report:
    level: Level
    components: list[Component]
    checked_at: float  # wall clock, time.time()
    seconds: float
    probe_timeout: float
    deadline: float
    notes: list[str] = dataclasses.field(default_factory=list)  # why the check itself is UNKNOWN

    @property
    def summary(self) -> str:
        text = judge.summary(self.components)
        return "; ".join([text, *self.notes]) if self.notes else text


def lock_path(settings: Settings) -> Path:
    return settings.logs_dir / "health.lock"


def check(settings: Settings, probe_timeout: float, deadline: float,
          after: Callable[[Report], None] = lambda report: None) -> Report:
    """The locked check; `after` runs while the lock is still held (the Prometheus file)."""
    started, wall = time.monotonic(), time.time()
    try:
        with lock.held(lock_path(settings), 0, "health"):
            report = run(settings, probe_timeout, deadline)
            after(report)
            return report
    except lock.LockBusy as exc:
        note = (f"a previous health check is still running ({exc.holder}); this one did not run; "
                f"see {Runbook.HEALTH_CHECK.path}")
    except OSError as exc:
        note = (f"cannot take the health lock {lock_path(settings)}: {exc.strerror or exc}; "
                f"see {Runbook.HEALTH_CHECK.path}")
    return Report(Level.UNKNOWN, [], wall, time.monotonic() - started, probe_timeout, deadline, [note])


def run(settings: Settings, probe_timeout: float, deadline: float, memory: bool = False) -> Report:
    """Observe and judge every component at once, without the lock (`status` reads this way).
    `memory`: each running container's memory as well (the docker engine is asked once more;
    a process's RSS is always read)."""
    started, wall = time.monotonic(), time.time()
    seen_model: dict[str, StackModel] = {}  # the compose job leaves the model here for the graph
    jobs = _jobs(settings, probe_timeout, started + deadline, seen_model, memory)
    results: dict[str, list[Component]] = {}
    done = threading.Condition()

    def worker(key: str, job: Callable[[], list[Component]]) -> None:
        try:
            found = job()
        except Exception as exc:  # the check's own failure: that part is UNKNOWN, with the reason
            found = [_unknown(key, f"the check itself failed: {exc.__class__.__name__}: {exc}")]
        with done:
            results[key] = found
            done.notify()

    for key, job in jobs.items():
        threading.Thread(target=worker, args=(key, job), name=f"health-{key}", daemon=True).start()
    with done:
        done.wait_for(lambda: len(results) == len(jobs), timeout=max(0.0, started + deadline - time.monotonic()))
        finished = dict(results)

    components: list[Component] = []
    for key in jobs:
        if key in finished:  # an empty list is an answer too: a disabled server with no record
            components += finished[key]
        else:
            components.append(_unknown(key, f"no answer within the check's {deadline:g}s deadline "
                                             f"(--deadline, KITTY_HEALTH_DEADLINE)"))
    _needs(settings, components, seen_model.get("model"))
    judge.link_dependencies(components)
    level = judge.worst([c.level for c in components])
    return Report(level, components, wall, time.monotonic() - started, probe_timeout, deadline)


def _unknown(key: str, detail: str) -> Component:
    """A part this run could not judge (job key `tier:name`; `compose:*` is the whole tier)."""
    tier, name = key.split(":", 1)
    return Component(tier if name == "*" else name, tier, Level.UNKNOWN, "unknown", detail,
                     runbook=Runbook.HEALTH_CHECK)


def _jobs(settings: Settings, timeout: float, deadline: float, seen_model: dict[str, StackModel],
          memory: bool = False) -> dict[str, Callable[[], list[Component]]]:
    jobs: dict[str, Callable[[], list[Component]]] = {}
    names = [s.name for s in settings.servers]
    names += [n for n in records.recorded_names(settings.logs_dir) if n not in names]
    supervisor = supervision.live(settings.logs_dir)
    views = supervisor.components if supervisor else {}
    for name in names:
        jobs[f"llama:{name}"] = lambda name=name: _supervised(_llama(settings, name, timeout), views)
    recorded_services = records.recorded_names(settings.logs_dir, records.SERVICE)
    for service in settings.images.services:
        if settings.images.enabled or service.name in recorded_services:
            jobs[f"native:{service.name}"] = lambda service=service: _supervised(
                _native(settings, service, timeout), views)
    if settings.compose_enabled:
        jobs["compose:*"] = lambda: _supervised(_compose(settings, deadline, seen_model, memory), views)
    return jobs


def _supervised(components: list[Component], views: dict) -> list[Component]:
    return [judge.with_supervision(c, views.get(f"{c.tier}:{c.name}")) for c in components]


def _llama(settings: Settings, name: str, timeout: float) -> list[Component]:
    spec = settings.server(name)
    seen = observe(settings.logs_dir, name, records.LLAMA, "", timeout)
    base = seen.record.url if seen.record else (spec.url if spec else None)  # where it really listens
    component = judge.from_process(seen, "llama", spec.alias if spec else name, bool(spec and spec.enabled),
                                    base + "/health" if base else None, Runbook.SERVER_CRASH)
    if component and spec and not component.pid:  # not running: where it would listen, what it would load
        component.ports, component.model = judge.address(spec.url), str(spec.model)
    if component and component.status == "healthy" and base:
        judge.with_requests(component, drain.in_flight(base, timeout, spec.auth if spec else None))
    if component and seen.record is not None and component.observed == "alive":
        _runs_on(component, seen.record)
    return [component] if component else []


STATUS_LOG_BYTES = 256 * 1024  # a record without what start read: its log's head, read here


def _runs_on(component: Component, record: records.EngineRecord) -> None:
    """A live server's devices and layers as start kept them in its record, else (a server the
    supervisor restarted, or one an older kitty-ops started) as its log says; and --metrics."""
    component.metrics = "--metrics" in record.argv
    found = offload.Offload.from_dict(record.offload) or verify.offload_of(record, STATUS_LOG_BYTES)
    component.offload = found.summary() if found.backend != offload.UNKNOWN else None


def _native(settings: Settings, service, timeout: float) -> list[Component]:
    seen = observe(settings.logs_dir, service.name, records.SERVICE, service.health_url, timeout)
    component = judge.from_process(seen, "native", service.name, settings.images.enabled,
                                    service.health_url, Runbook.NATIVE_SERVICE)
    if component and not component.ports:
        component.ports = judge.address(service.health_url)
    return [component] if component else []


def _compose(settings: Settings, deadline: float, seen_model: dict[str, StackModel],
             memory: bool = False) -> list[Component]:
    """The project's services as compose resolves them (what should run) and its containers as
    the engine reports them (what does), asked at once."""
    compose = Compose(settings.compose)
    remaining = max(0.05, deadline - time.monotonic() - DOCKER_MARGIN)
    model_box: dict[str, StackModel | ComposeError] = {}

    def load_model() -> None:
        try:
            model_box["model"] = outline.cached_model(
                outline.path(settings.logs_dir), settings.compose, lambda: compose.model(timeout=remaining))
        except ComposeError as exc:
            model_box["model"] = exc

    loader = threading.Thread(target=load_model, daemon=True)
    loader.start()
    try:
        states = compose.project_states(remaining, memory=memory)
        engine_problem = None
    except ComposeError as exc:
        states, engine_problem = {}, exc.problem
    loader.join(remaining + 0.1)
    model = model_box.get("model")
    if not isinstance(model, StackModel):
        problem = model.problem if isinstance(model, ComposeError) else None
        detail = problem.message if problem else "docker compose config did not answer in time"
        component = Component("compose", "compose", Level.UNKNOWN, "unknown",
                              f"cannot tell which services should run: {detail}",
                              runbook=problem.runbook if problem else Runbook.COMPOSE_FILE)
        return [component] + [judge.from_container(name, state, bool(state.health), time.time())
                              for name, state in sorted(states.items())]
    now = time.time()
    components = []
    for name in sorted(set(model.services) | set(states)):
        service = model.services.get(name)
        if engine_problem is not None:
            components.append(Component(name, "compose", Level.CRITICAL, "down",
                                        f"{engine_problem.message} ({engine_problem.fix})",
                                        service=name, runbook=engine_problem.runbook))
            continue
        components.append(judge.from_container(name, states.get(name), bool(service and service.has_healthcheck), now))
    seen_model["model"] = model
    return components


def _needs(settings: Settings, components: list[Component], model: StackModel | None) -> None:
    """What each component depends on, from the same graph start-all plans with."""
    natives = [s for s in settings.images.services if any(c.tier == "native" and c.name == s.name for c in components)]
    llama_names = [c.name for c in components if c.tier == "llama"]
    try:
        plan, _ = graph.build(llama_names, natives, model)
    except graph.CycleError:
        return
    for component in components:
        node = plan.nodes.get(f"{component.tier}:{component.name}")
        if node is not None:
            component.needs = tuple(sorted(plan.nodes[d].name for d in node.deps))
