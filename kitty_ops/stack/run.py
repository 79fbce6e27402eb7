"""Start and stop the whole stack as one dependency graph (see kitty_ops.stack.graph).

start: validate, preflight Docker, plan, pull the images this machine lacks (a failed pull
starts nothing), then run every node as soon as its dependencies are ready: the llama tier
(kitty_ops.llama.lifecycle, all servers at once), the native services and the compose services.
The first failure (a server dies loading, a container exits or turns unhealthy, a deadline
passes) or Ctrl+C cancels the rest and stops again everything this run started, so nothing is
left half-started. After a good start: checks (postgres, redis, mosquitto, rabbitmq, brain), the
port summary and the end-to-end query (kitty_ops.stack.checks).

stop: the graph reversed: a node stops once everything that depends on it has stopped (the
images API before its worker, app services before infrastructure, containers before the llama
servers they call), independent nodes at once; then `compose down` keeping the volumes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import platform
import subprocess
import threading
import time
from typing import Callable

from kitty_ops.config import NativeService, Settings
from kitty_ops.containers import outline
from kitty_ops.containers.compose import SERVICE_LABEL, Compose, ComposeError, ContainerState, StackModel
from kitty_ops.exitcodes import Exit
from kitty_ops.host import desired, lock
from kitty_ops.llama import lifecycle, validate
from kitty_ops.outcomes import Action, Outcome, Progress, Result, Silent
from kitty_ops.problems import Problem, error, has_errors
from kitty_ops.runbooks import Runbook
from kitty_ops.stack import checks, graph as graphs, native, reach
from kitty_ops.stack.graph import Graph, Node, Tier

LOG_TAIL_LINES = 20
NO_CONTAINER = "no container"


class UnknownNames(Exception):
    def __init__(self, unknown: list[str], known: list[str]):
        super().__init__(f"unknown component(s): {', '.join(unknown)}")
        self.unknown = unknown
        self.known = known


@dataclasses.dataclass(frozen=True)
class Selection:
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()


def _natives(settings: Settings) -> list[NativeService]:
    return list(settings.images.services) if settings.images.enabled else []


def _resolve(graph: Graph, selection: Selection) -> tuple[set[str], set[str]]:
    only, unknown_only = graphs.resolve_names(graph, selection.only)
    skip, unknown_skip = graphs.resolve_names(graph, selection.skip)
    unknown = unknown_only + unknown_skip
    if unknown:
        known = sorted({n.name for n in graph.nodes.values()} | {t.value for t in Tier})
        raise UnknownNames(unknown, known)
    return only, skip


# --------------------------------------------------------------------------------------- start

def start(settings: Settings, config_problems: list[Problem], selection: Selection = Selection(),
          progress: Progress = Silent(), cancel: threading.Event | None = None) -> Result:
    """Raises lock.LockBusy, UnknownNames, or KeyboardInterrupt after rolling back."""
    with lock.held(lock.project_lock(settings.logs_dir), settings.lock_timeout, "start"):
        if has_errors(config_problems):  # a broken configuration first: it is what to fix first
            return Result("start", Exit.CONFIG, [], validate.check(settings, config_problems).problems)
        compose = Compose(settings.compose) if settings.compose_enabled else None
        model = None
        full_model: Callable[[], StackModel | None] = lambda: model
        if compose is not None:
            known = outline.stored(outline.path(settings.logs_dir), settings.compose)
            problems, model = compose.preflight(known)
            if problems:
                code = Exit.CONFIG if problems[0].runbook is Runbook.COMPOSE_FILE else Exit.UNAVAILABLE
                return Result("start", code, [], problems)
            if known is None:
                outline.store(outline.path(settings.logs_dir), settings.compose, model)
            else:
                full_model = _in_background(compose.model, known)
        try:
            full, notes = graphs.build([s.name for s in settings.enabled_servers], _natives(settings), model)
        except graphs.CycleError as exc:
            return Result("start", Exit.CONFIG, [], [_cycle_problem(exc)])
        settings, unreachable = reach.with_reachable_binds(settings, full, compose, platform.system())
        if unreachable:
            return Result("start", Exit.CONFIG, [], unreachable)
        only, skip = _resolve(full, selection)
        plan = graphs.select_for_start(full, only, skip)
        specs = [settings.server(n.name) for n in plan.of_tier(Tier.LLAMA)]
        report = validate.check(settings, config_problems, specs)
        if not report.ok:
            return Result("start", Exit.CONFIG, [], report.problems)
        if compose is not None and plan.of_tier(Tier.COMPOSE):
            # Images this machine lacks come first: a pull that fails starts nothing, not even
            # the llama servers, instead of failing half-way through the graph.
            pulls = compose.pull_missing(model, [n.name for n in plan.of_tier(Tier.COMPOSE)], progress)
            if pulls:
                return Result("start", Exit.UNAVAILABLE, [], pulls)
        progress.event("plan", " -> ".join("[" + " ".join(level) + "]" for level in plan.levels()))
        run = _StartRun(settings, report, plan, compose, model, full_model, progress, cancel or threading.Event())
        result = run.execute()
        # The operator's intent (kitty_ops.host.desired): what runs now is wanted up.
        desired.mark(settings.logs_dir, [f"{o.component}:{o.name}" for o in result.outcomes if o.ok],
                     desired.UP, "start")
        result.notes = notes + result.notes
        result.problems = [p for p in report.problems if not p.is_error] + result.problems
        if result.exit == Exit.OK:
            result.checks = run.early_checks() + checks.run(checks.final_checks(settings, plan, full_model()))
            checks.report(result.checks, progress)
            if any(not c.ok for c in result.checks):
                result.exit = Exit.FAILED
                result.notes.append("the stack is running but a check failed; it was left up to diagnose")
        return result


def _in_background(resolve: Callable[[], StackModel], outline_model: StackModel) -> Callable[[], StackModel]:
    """The full model (with the resolved environment the checks need), resolved while the start
    goes on from its outline; the outline itself if resolving fails now (the checks then say
    what they could not check)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="compose-config")
    future = pool.submit(resolve)
    pool.shutdown(wait=False)

    def full() -> StackModel:
        try:
            return future.result()
        except ComposeError:
            return outline_model
    return full


def _cycle_problem(exc: graphs.CycleError) -> Problem:
    return error("depends_on", str(exc), "break the cycle in depends_on / the kitty-ops.needs labels",
                 Runbook.COMPOSE_FILE)


class _StartRun:
    """One start: a thread per node, a shared condition for 'something became ready or failed'."""

    def __init__(self, settings: Settings, report: validate.Report, plan: Graph,
                 compose: Compose | None, model: StackModel | None,
                 full_model: Callable[[], StackModel | None], progress: Progress, cancel: threading.Event):
        self.settings = settings
        self.report = report
        self.plan = plan
        self.compose = compose
        self.model = model  # the outline: services, dependencies, healthchecks, ports
        self.full_model = full_model  # with the resolved environment, for the checks
        self.progress = progress
        self.cancel = cancel
        self.changed = threading.Condition()
        self.ready: set[str] = set()
        self.outcomes: dict[str, Outcome] = {}
        self.llama_result: Result | None = None
        self.launched: dict[str, native.Launched] = {}  # native services this run started
        self.containers_started: list[str] = []  # compose services this run created or started
        self.watch: _ContainerWatch | None = None
        self.started = time.monotonic()
        # A data service is checked (postgres SELECT 1, ...) as soon as it is healthy, while the
        # rest still starts; only the end-to-end query waits for everything.
        self.check_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="check")
        self.checks: list[concurrent.futures.Future] = []

    def early_checks(self) -> list[checks.Check]:
        try:
            return [future.result() for future in self.checks]
        finally:
            self.check_pool.shutdown(wait=False)

    # --- bookkeeping

    def mark_ready(self, node_id: str) -> None:
        with self.changed:
            self.ready.add(node_id)
            self.changed.notify_all()

    def finish(self, node_id: str, outcome: Outcome) -> None:
        node = self.plan.nodes[node_id]
        if outcome.ok and node.tier is Tier.COMPOSE:
            check = checks.service_check(node.name, self.compose, self.full_model)
            if check is not None:
                self.checks.append(self.check_pool.submit(checks.timed, check))
        with self.changed:
            self.outcomes[node_id] = outcome
            if outcome.ok:
                self.ready.add(node_id)
            elif outcome.action is not Action.ROLLED_BACK:
                self.cancel.set()
            self.changed.notify_all()

    def wait_for(self, deps: frozenset[str]) -> bool:
        """Block until all `deps` are ready (True) or the run is cancelled (False)."""
        with self.changed:
            while not deps <= self.ready:
                if self.cancel.is_set():
                    return False
                self.changed.wait(0.2)
        return not self.cancel.is_set()

    # --- the run

    def execute(self) -> Result:
        threads = []
        llama_specs = [self.settings.server(n.name) for n in self.plan.of_tier(Tier.LLAMA)]
        if llama_specs:
            threads.append(threading.Thread(target=self._run_llama, args=(llama_specs,), name="llama"))
        compose_nodes = self.plan.of_tier(Tier.COMPOSE)
        if compose_nodes:
            self.watch = _ContainerWatch(self.compose, self.cancel)
        for node in self.plan.nodes.values():
            if node.tier is not Tier.LLAMA:
                threads.append(threading.Thread(target=self._run_node, args=(node,), name=node.id))
        try:
            # The llama servers load first (the longest part of most starts) while compose
            # creates the containers; the other nodes wait on the creation.
            if llama_specs:
                threads[0].start()
            if compose_nodes:
                self._create_containers([n.name for n in compose_nodes])
            for thread in threads:
                if not thread.is_alive() and thread.ident is None:
                    thread.start()
            # Sleep, not Thread.join: a Ctrl+C that interrupts join() can leave the thread
            # looking finished (CPython), and the roll-back below would not wait for it.
            while any(thread.is_alive() for thread in threads):
                time.sleep(0.05)
        except BaseException:
            self.cancel.set()
            self._join(threads)
            self._roll_back("interrupted")
            raise
        finally:
            if self.watch:
                self.watch.stop()
            if self.cancel.is_set():
                self.check_pool.shutdown(wait=False, cancel_futures=True)
        failed = [o for o in self.outcomes.values() if not o.ok and o.action is Action.FAILED]
        if self.llama_result and self.llama_result.exit != Exit.OK:
            failed += [o for o in self.llama_result.outcomes if o.action is Action.FAILED]
        if failed or self.cancel.is_set():
            self._roll_back(f"{failed[0].name} failed" if failed else "cancelled")
        outcomes = self._ordered()
        ok = not failed and not self.cancel.is_set()
        return Result("start", Exit.OK if ok else Exit.FAILED, outcomes, plan=self.plan.levels())

    def _join(self, threads: list[threading.Thread]) -> None:
        for thread in threads:
            if thread.is_alive():
                thread.join(60)  # every node wait observes cancel; compose commands have deadlines

    def _ordered(self) -> list[Outcome]:
        llama = {o.name: o for o in (self.llama_result.outcomes if self.llama_result else [])}
        outcomes = []
        for node_id in self.plan.order():
            node = self.plan.nodes[node_id]
            found = llama.get(node.name) if node.tier is Tier.LLAMA else self.outcomes.get(node_id)
            outcomes.append(found or Outcome(node.name, Action.ROLLED_BACK, False, 0, "",
                                             detail="not started: the start was cancelled",
                                             component=node.tier.value))
        return outcomes

    # --- llama tier

    def _run_llama(self, specs) -> None:
        try:
            self.llama_result = lifecycle.start_validated(
                self.settings, self.report, specs, self.progress, self.cancel,
                on_ready=lambda name: self.mark_ready(f"llama:{name}"))
        finally:
            if self.llama_result is None or self.llama_result.exit != Exit.OK:
                self.cancel.set()
            with self.changed:
                self.changed.notify_all()

    # --- native and compose nodes

    def _run_node(self, node: Node) -> None:
        try:
            if not self.wait_for(node.deps):
                return
            self.progress.event(node.name, "dependencies ready: starting" if node.deps else "starting")
            outcome = self._start_native(node) if node.tier is Tier.NATIVE else self._start_container(node)
            self.finish(node.id, outcome)
        except Exception as exc:  # a bug or an unexpected error must fail the start, not hang it
            self.finish(node.id, Outcome(node.name, Action.FAILED, False, 0, "",
                                         detail=f"{exc.__class__.__name__}: {exc}",
                                         component=node.tier.value))

    def _start_native(self, node: Node) -> Outcome:
        service = next(s for s in self.settings.images.services if s.name == node.name)
        record = native.running(self.settings, service)
        if record is not None:
            self.progress.event(node.name, f"already running (pid {record.pid})")
            return native.outcome(service, Action.ALREADY_RUNNING, True, record.pid, 0.0, "already running")
        launched = native.spawn(self.settings, service, self.progress)
        if isinstance(launched, Outcome):
            return launched
        self.launched[node.name] = launched
        deadline = time.monotonic() + self.settings.health_timeout
        return native.wait_ready(self.settings, launched, deadline, self.cancel, self.progress)

    def _create_containers(self, services: list[str]) -> None:
        created = self.compose.create(services, timeout=self.settings.compose.health_timeout + 600)
        if created.code != 0:
            detail = (created.err.strip().splitlines() or ["no output"])[-1]
            for name in services:
                self.outcomes[f"compose:{name}"] = Outcome(
                    name, Action.FAILED, False, 0, "", detail=f"docker compose up --no-start failed: {detail}",
                    log_tail=created.err.strip().splitlines()[-LOG_TAIL_LINES:],
                    runbook=Runbook.CONTAINER_FAILED, component="compose")
            self.cancel.set()
            return
        # `up --no-start` starts nothing, so what is not running now was not running before
        # this run: those containers are ours to remove again on a roll-back.
        after = self.watch.refresh()
        self.containers_started = [s for s in services if s not in after or after[s].status != "running"]

    def _start_container(self, node: Node) -> Outcome:
        service = self.model.services[node.name]
        one_shot = any(s.depends_on.get(node.name) == "service_completed_successfully"
                       for s in self.model.services.values())
        first = self.watch.state(node.name)
        port, url = _published(service)
        base = dict(component="compose", port=port, url=url)
        if first and _is_ready(first, service.has_healthcheck, one_shot):
            self.progress.event(node.name, f"already {first.describe()}")
            if node.name in self.containers_started:
                self.containers_started.remove(node.name)
            return _outcome(node.name, Action.ALREADY_RUNNING, True, 0.0, "already running", **base)
        started = time.monotonic()
        if not (first and first.status == "running"):
            up = self.compose.up(node.name, timeout=self.settings.compose.health_timeout)
            if up.code != 0:
                return _outcome(node.name, Action.FAILED, False, time.monotonic() - started,
                                f"docker compose up failed: {_last(up.err)}",
                                log_tail=self.compose.logs(node.name, LOG_TAIL_LINES),
                                runbook=Runbook.CONTAINER_FAILED, **base)
        baseline = self.watch.refresh().get(node.name)
        restarts = baseline.restarts if baseline else 0
        deadline = started + self.settings.compose.health_timeout
        announced = ""
        while True:
            state = self.watch.state(node.name)
            seconds = time.monotonic() - started
            if state and _is_ready(state, service.has_healthcheck, one_shot):
                self.progress.event(node.name, f"{'healthy' if service.has_healthcheck else state.status} after {seconds:.1f}s")
                return _outcome(node.name, Action.STARTED, True, seconds, state.describe(), **base)
            failure = _failure(state, restarts, one_shot, self.watch.last_exit.get(node.name),
                               self.watch.events is not None and self.watch.events.poll() is None)
            if failure is None and time.monotonic() >= deadline:
                failure = (f"not healthy after {seconds:.0f}s ({state.describe() if state else 'no container'}); "
                           f"KITTY_COMPOSE_TIMEOUT is {self.settings.compose.health_timeout:g}s")
            if failure:
                tail = self.compose.logs(node.name, LOG_TAIL_LINES) or ["(the container printed nothing)"]
                if state and state.last_probe:
                    tail.append(f"last healthcheck: {state.last_probe}")
                return _outcome(node.name, Action.FAILED, False, seconds, failure, log_tail=tail,
                                runbook=Runbook.CONTAINER_FAILED, **base)
            if self.cancel.is_set():
                return _outcome(node.name, Action.ROLLED_BACK, False, seconds, "cancelled", **base)
            if state and state.describe() != announced:
                announced = state.describe()
                self.progress.event(node.name, announced)
            self.watch.wait_change(min(0.5, max(0.01, deadline - time.monotonic())))

    # --- roll-back

    def _roll_back(self, why: str) -> None:
        """Stop what this run started, dependents first: containers, native services, then the
        llama servers (those still loading were already rolled back by lifecycle itself)."""
        if self.containers_started:
            self.progress.event("compose", f"removing {len(self.containers_started)} container(s) "
                                           f"started by this run: {why}")
            self.compose.remove(self.containers_started)
            for name in self.containers_started:
                outcome = self.outcomes.get(f"compose:{name}")
                if outcome is not None and outcome.ok:
                    outcome.action, outcome.ok, outcome.detail = Action.ROLLED_BACK, False, f"removed again: {why}"
            self.containers_started = []
        native_stop_order = [n.name for n in reversed(self.plan.of_tier(Tier.NATIVE))]  # API before worker
        for name in [n for n in native_stop_order if n in self.launched]:
            launched = self.launched.pop(name)
            stopped = native.stop(self.settings, name, self.progress, launched.popen)
            outcome = self.outcomes.get(f"native:{name}")
            if outcome is not None and outcome.action is not Action.FAILED:
                outcome.action, outcome.ok, outcome.detail = Action.ROLLED_BACK, False, f"stopped again: {why}"
            elif outcome is None:
                self.outcomes[f"native:{name}"] = stopped
        if self.llama_result is not None:
            started = [o.name for o in self.llama_result.outcomes if o.action is Action.STARTED]
            if started:
                self.progress.event("llama", f"stopping {len(started)} server(s) started by this run: {why}")
                lifecycle.stop_servers(self.settings, started, self.progress)
                for o in self.llama_result.outcomes:
                    if o.name in started:
                        o.action, o.ok, o.detail = Action.ROLLED_BACK, False, f"stopped again: {why}"


def _outcome(name: str, action: Action, ok: bool, seconds: float, detail: str, **extra) -> Outcome:
    return Outcome(name, action, ok, extra.pop("port", 0), extra.pop("url", ""), None, seconds, detail, **extra)


def _published(service) -> tuple[int, str]:
    if not service.ports:
        return 0, ""
    port = service.ports[0]
    host = "127.0.0.1" if port.host_ip in ("0.0.0.0", "", "::") else port.host_ip
    return port.published, f"{host}:{port.published}"


def _is_ready(state: ContainerState, has_healthcheck: bool, one_shot: bool) -> bool:
    if one_shot:
        return state.status == "exited" and state.exit_code == 0
    if has_healthcheck:
        return state.status == "running" and state.health == "healthy"
    return state.status == "running"


def _failure(state: ContainerState | None, restarts: int, one_shot: bool, last_exit: int | None = None,
             events_live: bool = False) -> str | None:
    if state is None:
        return None
    if state.status in ("exited", "dead") and not (one_shot and state.exit_code == 0):
        return f"the container {state.status} with code {state.exit_code} while starting"
    if state.status == "restarting" or state.restarts > restarts:
        # Running again after a restart, inspect shows exit code 0: the die event has the real
        # one, and is waited for when the event stream runs (it is a moment behind inspect).
        if state.status == "running" and last_exit is None and events_live:
            return None
        code = state.exit_code if state.status == "restarting" or last_exit is None else last_exit
        return f"the container is crash-looping (restarted {state.restarts - restarts} time(s), exit code {code})"
    if state.health == "unhealthy":
        return "the container turned unhealthy (its healthcheck keeps failing)"
    return None


def _last(text: str) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1] if lines else "no output"


class _ContainerWatch:
    """The states of the project's containers for every waiter of this run. `docker events`
    streams the engine's start, die and health_status events for the project: each one triggers
    a single `docker inspect`, so a container turning healthy is seen at once without polling
    the engine on a busy machine. A refresh at least every second is the safety net (an event
    stream that died, an event missed between two reads)."""

    SAFETY_REFRESH = 1.0

    def __init__(self, compose: Compose, cancel: threading.Event):
        self.compose = compose
        self.cancel = cancel
        self.states: dict[str, ContainerState] = {}
        self.last_exit: dict[str, int] = {}  # service -> exit code of its last die event
        self.changed = threading.Condition()
        self.dirty = threading.Event()
        self.stopped = threading.Event()
        self.events = compose.events()
        threading.Thread(target=self._read_events, name="docker-events", daemon=True).start()
        threading.Thread(target=self._refresher, name="container-watch", daemon=True).start()

    def _read_events(self) -> None:
        if self.events is None:
            return
        for line in self.events.stdout:
            self._note_exit(line)
            self.dirty.set()

    def _note_exit(self, line: str) -> None:
        """A die event carries the exit code; docker inspect forgets it once a restart policy
        has brought the container back up, which is what a crash-loop report needs."""
        try:
            event = json.loads(line)
            attributes = event.get("Actor", {}).get("Attributes", {})
            if event.get("status", event.get("Action")) == "die" and "exitCode" in attributes:
                self.last_exit[attributes.get(SERVICE_LABEL, "")] = int(attributes["exitCode"])
        except (ValueError, AttributeError, TypeError):
            pass

    def _refresher(self) -> None:
        while not self.stopped.is_set():
            self.dirty.wait(self.SAFETY_REFRESH)
            self.dirty.clear()
            if not self.stopped.is_set():
                self._publish(self.compose.inspect(self.compose.ids.values()))

    def _publish(self, states: dict[str, ContainerState]) -> None:
        with self.changed:
            self.states = states
            self.changed.notify_all()

    def refresh(self) -> dict[str, ContainerState]:
        """Re-read which containers the project has (after a create), then their states."""
        try:
            self.compose.container_ids()
        except ComposeError:
            pass
        states = self.compose.inspect(self.compose.ids.values())
        self._publish(states)
        return states

    def state(self, service: str) -> ContainerState | None:
        with self.changed:
            return self.states.get(service)

    def wait_change(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout)

    def stop(self) -> None:
        self.stopped.set()
        self.dirty.set()
        if self.events is not None and self.events.poll() is None:
            self.events.terminate()  # our own child: `docker events`
            try:
                self.events.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.events.kill()


# ---------------------------------------------------------------------------------------- stop

def stop(settings: Settings, selection: Selection = Selection(), progress: Progress = Silent(),
         compose_enabled: bool | None = None) -> Result:
    """Raises lock.LockBusy, UnknownNames."""
    with lock.held(lock.project_lock(settings.logs_dir), settings.lock_timeout, "stop"):
        enabled = settings.compose_enabled if compose_enabled is None else compose_enabled
        compose = Compose(settings.compose, all_profiles=True) if enabled else None
        problems: list[Problem] = []
        model, present = None, {}
        if compose is not None:
            where = outline.path(settings.logs_dir, all_profiles=True)
            known = outline.stored(where, settings.compose, compose.profiles)
            problems, model = compose.preflight(known)
            if not problems:
                if known is None:
                    outline.store(where, settings.compose, model, compose.profiles)
                present = compose.states()
        natives = [s for s in settings.images.services
                   if settings.images.enabled or native.running(settings, s) is not None]
        try:
            full, _ = graphs.build(lifecycle.all_server_names(settings), natives, model)
        except graphs.CycleError:
            # Stopping must still work: without the order, everything stops at once.
            model = _without_edges(model)
            full, _ = graphs.build(lifecycle.all_server_names(settings), natives, model)
        only, skip = _resolve(full, selection)
        chosen = graphs.select_for_stop(full, only, skip)
        order = graphs.reversed_graph(chosen)
        # "down" before anything stops: a supervisor that sees these processes die reads it.
        desired.mark(settings.logs_dir, list(chosen.nodes), desired.DOWN, "stop")

        def stop_node(node: Node) -> Outcome:
            if node.tier is Tier.LLAMA:
                return lifecycle.stop_one(settings, node.name, progress)
            if node.tier is Tier.NATIVE:
                return native.stop(settings, node.name, progress)
            if node.name not in present:
                return Outcome(node.name, Action.NOT_RUNNING, True, 0, "", detail=NO_CONTAINER,
                               component="compose")
            started = time.monotonic()
            result = compose.remove([node.name])
            seconds = time.monotonic() - started
            if result.code != 0:
                return Outcome(node.name, Action.FAILED, False, 0, "", None, seconds,
                               f"docker compose rm failed: {_last(result.err)}",
                               runbook=Runbook.CONTAINER_FAILED, component="compose")
            progress.event(node.name, f"container stopped and removed in {seconds:.1f}s")
            return Outcome(node.name, Action.STOPPED, True, 0, "", None, seconds, "stopped",
                           component="compose")

        outcomes = run_in_order(order, stop_node)
        if compose is not None and model is not None and not selection.only and not selection.skip:
            down = compose.down()  # the network, and containers of services no longer in the file
            if down.code != 0:
                problems.append(_down_problem(down.err))
        if problems:
            outcomes.append(Outcome("compose", Action.FAILED, False, 0, "",
                                    detail=problems[0].message, runbook=problems[0].runbook,
                                    component="compose"))
        failed = any(not o.ok for o in outcomes)
        # Services of the compose file that had no container are not news to the operator.
        shown = [o for o in outcomes if not (o.component == "compose" and o.detail == NO_CONTAINER)]
        return Result("stop", Exit.FAILED if failed else Exit.OK, shown, problems)


def _without_edges(model: StackModel) -> StackModel:
    return dataclasses.replace(model, services={
        name: dataclasses.replace(service, depends_on={}, needs=())
        for name, service in model.services.items()})


def _down_problem(err: str) -> Problem:
    return error("docker compose down", _last(err), "run `docker compose -p PROJECT ps` to see what is left",
                 Runbook.CONTAINER_FAILED)


def run_in_order(graph: Graph, action: Callable[[Node], Outcome]) -> list[Outcome]:
    """Run `action` on every node, each once all of its deps are done (ok or not), independent
    nodes concurrently. Returns outcomes in completion-compatible graph order."""
    if not graph.nodes:
        return []
    done: dict[str, concurrent.futures.Future] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(graph.nodes)) as pool:
        for level in graph.levels():
            for node_id in level:
                node = graph.nodes[node_id]
                deps = [done[d] for d in node.deps]
                done[node_id] = pool.submit(_after, deps, action, node)
        return [done[n].result() for n in graph.order()]


def _after(deps: list[concurrent.futures.Future], action: Callable[[Node], Outcome], node: Node) -> Outcome:
    concurrent.futures.wait(deps)
    return action(node)
