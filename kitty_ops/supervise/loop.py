"""The supervision loop: keep up what the operator wants up, alone, through the same lifecycle
code as `start`.

One thread (this loop) owns every decision and every change of state; the waits run in threads
of their own and report back through a queue: a death watcher per process
(kitty_ops.supervise.watch), a readiness wait after each start or adoption, a /health probe per
interval, a stop of a hung process, a start under the project lock. Each report carries the
generation of the process it was about, so a report about a process already replaced is
ignored.

Per component, each tick:
- intent (kitty_ops.host.desired) not "up": nothing is started; a process the operator stops is
  only let go (state `stopped`), never signalled by the supervisor;
- "up", nothing watched: a running process that is provably ours is adopted (no restart), else
  one is started (after its backoff when it failed);
- `failed` (crash loop): nothing, until the intent is written again after the give-up
  (`kitty-ops restart NAME`, start-all).

A failure (death, hang, a start that dies or misses LLAMACPP_HEALTH_TIMEOUT) goes through the
pure policy (kitty_ops.supervise.policy): backoff, or give up. A death is a failure only when
the intent is still "up" and no other process of ours is recorded in its place (a `restart` or
`stop` by the operator writes "down" before it signals).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import subprocess
import threading
import time
from typing import Callable

from kitty_ops.config import NativeService, ServerSpec, Settings
from kitty_ops.host import desired, lock, probes, procs, records, supervision
from kitty_ops.host.supervision import (BACKOFF, FAILED, RUNNING, STARTING, STOPPED, STOPPING,
                                        ComponentState, SupervisorState)
from kitty_ops.llama import command, lifecycle, memory
from kitty_ops.outcomes import Outcome, Progress, Silent
from kitty_ops.runbooks import Runbook
from kitty_ops.stack import native
from kitty_ops.supervise import alerts, containers, logs, metrics, policy as policies, watch

TICK = 0.2  # seconds between reconciliations when nothing reports
LOCK_RETRY = 1.0  # a start or stop of the operator holds the project lock: try again after this


@dataclasses.dataclass(frozen=True)
class Target:
    """A component the supervisor keeps up: a llama server or a native service."""

    tier: str  # llama | native
    name: str
    spec: ServerSpec | None = None
    service: NativeService | None = None

    @property
    def id(self) -> str:
        return f"{self.tier}:{self.name}"

    @property
    def prefix(self) -> str:
        return records.LLAMA if self.tier == "llama" else records.SERVICE

    @property
    def crash_runbook(self) -> Runbook:
        return Runbook.SERVER_CRASH if self.tier == "llama" else Runbook.NATIVE_SERVICE

    def health_path(self, record: records.EngineRecord) -> str | None:
        """Path probed under the record's URL; None: no health endpoint (liveness only)."""
        if self.tier == "llama":
            return "/health"
        url = self.service.health_url if self.service else None
        return url[len(record.url):] if url and url.startswith(record.url) else (None if not url else "")


def targets_for(settings: Settings, names: set[str] | None = None) -> list[Target]:
    found = [Target("llama", s.name, spec=s) for s in settings.enabled_servers]
    if settings.images.enabled:
        found += [Target("native", s.name, service=s) for s in settings.images.services]
    return [t for t in found if names is None or t.name in names or t.tier in names]


class _Instance:
    """One process of a component, as watched."""

    def __init__(self, gen: int, record: records.EngineRecord, popen: subprocess.Popen | None):
        self.gen = gen
        self.record = record
        self.popen = popen
        self.died = threading.Event()
        self.death: watch.Death | None = None
        self.stop = threading.Event()  # ends the watch and the readiness wait
        self.method = ""

    def wait_exit(self, seconds: float) -> str | None:
        return self.death.description if self.died.wait(seconds) and self.death else None


class _Component:
    def __init__(self, target: Target, view: ComponentState):
        self.target = target
        self.view = view
        self.inst: _Instance | None = None
        self.gen = 0
        self.streak = 0
        self.failures: list[float] = []
        self.healthy_since: float | None = None
        self.failed_probes = 0
        self.next_probe = 0.0
        self.probing = False
        self.launching = False
        self.backoff_until: float | None = None  # monotonic
        self.failed_at: float | None = None  # wall clock of the give-up
        self.recovering = False  # restarted after a failure: alert "recovery" once healthy
        self.after_failure = False  # the next start is a restart (counted, alerted)


class Supervisor:
    def __init__(self, settings: Settings, targets: list[Target], engine: command.EngineInfo | None,
                 progress: Progress = Silent(), stop_on_exit: bool = False,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.settings = settings
        self.logs = settings.logs_dir
        self.engine = engine
        self.progress = progress
        self.policy = policies.Policy.from_settings(settings.supervise)
        self.clock, self.wall = clock, wall
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.alerter = alerts.Alerter(settings.supervise.alert_command, settings.supervise.alert_timeout,
                                      lambda line: progress.event("alert", line), str(settings.project_dir))
        me = procs.identity_of(os.getpid())
        previous = supervision.load(self.logs)
        self.state = SupervisorState(os.getpid(), me.create_time if me else 0.0, wall(), wall(), {},
                                     stop_on_exit)
        self.components: dict[str, _Component] = {}
        for target in targets:
            view = ComponentState(target.id, target.tier, target.name, since=wall())
            old = previous.components.get(target.id) if previous else None
            if old is not None:  # a supervisor before this one (SIGKILLed, or stopped): keep the count
                view.restarts, view.history = old.restarts, old.history
            self.components[target.id] = _Component(target, view)
            self.state.components[target.id] = view
        self.dirty = True
        self.next_log_check = 0.0
        self.rotating = threading.Lock()

    # ------------------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        endpoint = self._serve_metrics()
        events = containers.follow(self.settings, self.events, self.progress, stop) \
            if self.settings.compose_enabled else None
        try:
            while not stop.is_set():
                self.step(timeout=TICK)
        finally:
            if events is not None:
                events.close()
            if endpoint is not None:
                endpoint.shutdown()
                endpoint.server_close()
            for component in self.components.values():
                if component.inst is not None:
                    component.inst.stop.set()
            self.alerter.wait_idle(min(5.0, self.settings.supervise.alert_timeout))
            self._save()

    def _serve_metrics(self):
        port = self.settings.supervise.metrics_port
        if not port:
            return None
        try:
            server = metrics.serve(port, lambda: metrics.render(self.state, self.wall()))
        except OSError as exc:
            self.progress.event("metrics", f"cannot listen on 127.0.0.1:{port} (KITTY_METRICS_PORT): "
                                           f"{exc.strerror or exc}; supervising without the endpoint; "
                                           f"see {Runbook.PORT_CONFLICT.path}")
            return None
        self.progress.event("metrics", f"Prometheus endpoint on http://127.0.0.1:{port}/metrics")
        return server

    def step(self, timeout: float = 0.0) -> None:
        """Handle what was reported (waiting up to `timeout` for the first report), then reconcile."""
        try:
            event = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            event = None
        while event is not None:
            self._handle(*event)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                event = None
        intents = desired.load(self.logs)
        for component in self.components.values():
            self._reconcile(component, intents)
        if self.clock() >= self.next_log_check:
            self.next_log_check = self.clock() + self.settings.supervise.log_check
            self._rotate_logs()
        if self.dirty:
            self._save()

    def _rotate_logs(self) -> None:
        """Rotation in a thread of its own (a copy of 100 MB takes a moment), under the project
        lock when it is free (else next time): no start rewrites a record meanwhile."""
        max_bytes = int(self.settings.supervise.log_max_mb * 1024 * 1024)
        if max_bytes <= 0 or not self.rotating.acquire(blocking=False):
            return
        targets = [c.target for c in self.components.values() if c.view.state != STOPPING]

        def rotate_all() -> None:
            try:
                with lock.held(lock.project_lock(self.logs), 0, "supervise: log rotation"):
                    for target in targets:
                        try:
                            done = logs.rotate_component(self.logs, target.name, target.prefix, max_bytes,
                                                         self.settings.supervise.log_keep)
                        except OSError as exc:
                            self.progress.event(target.name, f"log rotation failed: {exc}")
                            continue
                        if done is not None:
                            paused = f"; paused {done.paused_ms:.1f} ms" if done.paused_ms is not None else ""
                            self.progress.event(target.name, f"rotated {done.path.name} ({done.bytes} bytes{paused})")
            except lock.LockBusy:
                pass
            finally:
                self.rotating.release()

        threading.Thread(target=rotate_all, name="log-rotation", daemon=True).start()

    def _save(self) -> None:
        self.state.updated_at = self.wall()
        try:
            supervision.save(self.logs, self.state)
            self.dirty = False
        except OSError as exc:
            self.progress.event("supervise", f"cannot write {supervision.path(self.logs)}: {exc}")

    def _set(self, c: _Component, state: str, detail: str = "", runbook: Runbook | None = None) -> None:
        view = c.view
        if view.state != state:
            view.since = self.wall()
        view.state, view.detail = state, detail
        view.runbook = runbook.path if runbook else None
        view.pid = c.inst.record.pid if c.inst else None
        view.backoff_until = (self.wall() + max(0.0, c.backoff_until - self.clock())
                              if state == BACKOFF and c.backoff_until is not None else None)
        self.dirty = True

    def _alert(self, c: _Component, event: str, detail: str) -> None:
        last = c.view.last_exit
        env = alerts.environment(event, c.target.name, c.target.tier, detail, c.view.restarts,
                                 last.what if last else "", c.view.runbook or c.target.crash_runbook.path,
                                 self.wall(), os.environ)
        env["KITTY_PROJECT_DIR"] = str(self.settings.project_dir)
        self.alerter.send(env)

    # ------------------------------------------------------------------------ reconciliation

    def _reconcile(self, c: _Component, intents: dict[str, desired.Intent]) -> None:
        intent = intents.get(c.target.id)
        up = intent is not None and intent.want == desired.UP
        if c.target.tier == "compose":
            self._reconcile_container(c, intent)
            return
        if c.view.state == FAILED:
            if not (up and c.failed_at is not None and intent.at > c.failed_at):
                return
            self.progress.event(c.target.name, f"the operator asked again ({intent.by}): failed state cleared")
            c.streak, c.failures, c.failed_at = 0, [], None
            c.after_failure = False
            self._set(c, STOPPED, "failed state cleared by the operator")
        if c.launching or c.view.state == STOPPING:
            return
        if not up:
            if c.view.state != STOPPED:
                self._let_go(c, f"the operator's intent is down ({intent.by})" if intent else "no intent to run it")
            return
        if c.inst is not None:
            if c.view.state == RUNNING:
                self._maybe_probe(c)
            return
        if c.view.state == BACKOFF and c.backoff_until is not None and self.clock() < c.backoff_until:
            return
        record = self._running_record(c.target)
        if record is not None:
            self._adopt(c, record)
        else:
            self._launch(c)

    def _let_go(self, c: _Component, why: str) -> None:
        if c.inst is not None:
            c.inst.stop.set()
            c.inst = None
        c.gen += 1  # reports about the old process are ignored from now on
        c.backoff_until, c.recovering = None, False
        self.progress.event(c.target.name, f"not supervised any more: {why}")
        self._set(c, STOPPED, why)

    def _running_record(self, target: Target) -> records.EngineRecord | None:
        try:
            record = records.load(self.logs, target.name, target.prefix)
        except records.BadRecord:
            return None
        if record is None or procs.check(record.identity) is not procs.Liveness.OURS:
            return None
        return record

    def _adopt(self, c: _Component, record: records.EngineRecord, popen: subprocess.Popen | None = None,
               started: bool = False) -> None:
        c.gen += 1
        inst = _Instance(c.gen, record, popen)
        c.inst = inst
        c.failed_probes, c.probing = 0, False

        def died(death: watch.Death) -> None:
            inst.death = death
            inst.died.set()
            self.events.put(("died", c.target.id, inst.gen, death))

        inst.method = watch.watch(record.identity, popen, died, self.settings.supervise.poll, inst.stop)
        if not started:
            whose = "its own child, started by the start it ran" if inst.method == "waitpid" else "adopted"
            self.progress.event(c.target.name, f"watching pid {record.pid}: {whose} (watched by {inst.method})")
        self._set(c, STARTING, f"pid {record.pid}: waiting for health")
        threading.Thread(target=self._wait_ready, args=(c, inst), name=f"ready-{c.target.name}",
                         daemon=True).start()

    def _wait_ready(self, c: _Component, inst: _Instance) -> None:
        deadline = self.clock() + self.settings.health_timeout
        path = c.target.health_path(inst.record)
        if path is None:  # a worker: ready once it stayed alive for its settle time
            settle = c.target.service.settle if c.target.service else 1.0
            if inst.wait_exit(settle) is None and not inst.stop.is_set():
                self.events.put(("ready", c.target.id, inst.gen, settle))
            return
        result = probes.wait_ready(inst.record.url, deadline, inst.wait_exit, inst.stop, path=path)
        if result.outcome is probes.Outcome.READY:
            self.events.put(("ready", c.target.id, inst.gen, result.seconds))
        elif result.outcome is probes.Outcome.TIMEOUT:
            self.events.put(("hung", c.target.id, inst.gen,
                             f"not healthy within LLAMACPP_HEALTH_TIMEOUT ({self.settings.health_timeout:g}s): "
                             f"{result.detail}"))
        # DIED: the watcher reports it; CANCELLED: let go

    def _launch(self, c: _Component) -> None:
        c.launching = True
        restart, c.after_failure = c.after_failure, False
        if restart:
            c.view.restarts += 1
            c.view.last_restart = self.wall()
            c.recovering = True
            self._alert(c, "restart", f"restart {c.view.restarts} after: "
                                      f"{c.view.last_exit.what if c.view.last_exit else 'a failure'}")
        self._set(c, STARTING, "restarting" if restart else "starting (wanted up, not running)")
        threading.Thread(target=self._spawn, args=(c,), name=f"start-{c.target.name}", daemon=True).start()

    def _spawn(self, c: _Component) -> None:
        target = c.target
        try:
            with lock.held(lock.project_lock(self.logs), self.settings.lock_timeout,
                           f"supervise: start {target.name}"):
                intent = desired.load(self.logs).get(target.id)
                if intent is None or intent.want != desired.UP:
                    self.events.put(("spawn-skipped", target.id, "the operator's intent is down"))
                    return
                if self._running_record(target) is not None:  # someone started it meanwhile
                    self.events.put(("spawn-skipped", target.id, "found running"))
                    return
                if target.tier == "llama":
                    if self.engine is None:
                        raise RuntimeError("no llama-server engine was validated at start")
                    spawned = lifecycle.spawn_one(self.settings, target.spec, self.engine, self.progress)
                else:
                    launched = native.spawn(self.settings, target.service, self.progress)
                    spawned = launched if isinstance(launched, Outcome) else (launched.record, launched.popen)
            if isinstance(spawned, Outcome):
                self.events.put(("spawn-failed", target.id, spawned.detail, spawned.log_tail))
            else:
                self.events.put(("spawned", target.id, spawned[0], spawned[1]))
        except lock.LockBusy as exc:
            self.events.put(("lock-busy", target.id, exc.holder))
        except Exception as exc:  # a bug or an unexpected error: a failure, never a dead loop
            self.events.put(("spawn-failed", target.id, f"{exc.__class__.__name__}: {exc}", []))

    def _maybe_probe(self, c: _Component) -> None:
        inst = c.inst
        path = c.target.health_path(inst.record)
        if path is None or c.probing or self.clock() < c.next_probe:
            return
        c.probing = True
        c.next_probe = self.clock() + self.settings.supervise.probe_interval
        timeout = self.settings.supervise.probe_timeout

        def probe() -> None:
            result = probes.probe_health(inst.record.url, timeout=timeout, path=path)
            self.events.put(("probe", c.target.id, inst.gen, result))

        threading.Thread(target=probe, name=f"probe-{c.target.name}", daemon=True).start()

    # ------------------------------------------------------------------------------- reports

    def _handle(self, kind: str, component_id: str, *args) -> None:
        if kind == "container":
            self._on_container(component_id, *args)
            return
        c = self.components[component_id]
        if kind in ("spawned", "spawn-failed", "spawn-skipped", "lock-busy"):
            c.launching = False
            getattr(self, "_on_" + kind.replace("-", "_"))(c, *args)
            return
        gen, rest = args[0], args[1:]
        if c.inst is None or gen != c.inst.gen:
            return  # about a process no longer watched
        getattr(self, "_on_" + kind)(c, *rest)

    def _on_spawned(self, c: _Component, record: records.EngineRecord, popen: subprocess.Popen) -> None:
        self._adopt(c, record, popen, started=True)

    def _on_spawn_failed(self, c: _Component, detail: str, log_tail: list[str]) -> None:
        self._failure(c, f"did not start: {detail}", log_tail=log_tail)

    def _on_spawn_skipped(self, c: _Component, why: str) -> None:
        self.progress.event(c.target.name, f"start skipped: {why}")
        self._set(c, STOPPED, why)

    def _on_lock_busy(self, c: _Component, holder: str) -> None:
        self.progress.event(c.target.name, f"project lock held ({holder}): trying again")
        c.backoff_until = self.clock() + LOCK_RETRY
        self._set(c, BACKOFF, f"waiting for the project lock ({holder})")

    def _on_ready(self, c: _Component, seconds: float) -> None:
        c.healthy_since = self.clock()
        c.failed_probes = 0
        c.next_probe = self.clock() + self.settings.supervise.probe_interval
        self.progress.event(c.target.name, f"healthy (pid {c.inst.record.pid})")
        self._set(c, RUNNING, f"pid {c.inst.record.pid}: healthy")
        if c.recovering:
            c.recovering = False
            self._alert(c, "recovery", f"healthy again after restart {c.view.restarts} "
                                       f"(pid {c.inst.record.pid}, {seconds:.1f}s to healthy)")

    def _on_probe(self, c: _Component, result: probes.ProbeResult) -> None:
        c.probing = False
        if c.view.state != RUNNING:
            return
        if not policies.probe_failed(result.health):
            c.failed_probes = 0
            return
        c.failed_probes += 1
        self.progress.event(c.target.name, f"/health failed ({result.detail or result.health.value}): "
                                           f"{c.failed_probes}/{self.policy.hang_probes}")
        if policies.is_hang(self.policy, c.failed_probes):
            self._on_hung(c, f"hung: {c.failed_probes} failed /health probes in a row "
                             f"(last: {result.detail or result.health.value})")

    def _on_hung(self, c: _Component, what: str) -> None:
        """Alive but useless: stop it (no drain: it answers nothing), then count the failure."""
        inst = c.inst
        self._set(c, STOPPING, what, c.target.crash_runbook)
        self.progress.event(c.target.name, f"{what}: stopping pid {inst.record.pid}")
        quick = dataclasses.replace(self.settings, drain=False)

        def stop_it() -> None:
            try:
                lifecycle.terminate(quick, inst.record, inst.popen, self.progress)
            except Exception as exc:  # noqa: BLE001 (reported; the failure path goes on)
                self.progress.event(c.target.name, f"stop of the hung process failed: {exc}")
            self.events.put(("stopped", c.target.id, inst.gen, what))

        threading.Thread(target=stop_it, name=f"stop-{c.target.name}", daemon=True).start()

    def _on_stopped(self, c: _Component, what: str) -> None:
        inst = c.inst
        inst.stop.set()
        c.inst = None
        self._failure(c, what, log_tail=self._tail(inst))

    def _on_died(self, c: _Component, death: watch.Death) -> None:
        if c.view.state == STOPPING:
            return  # our own stop of a hung process: its "stopped" report follows
        inst = c.inst
        inst.stop.set()
        c.inst = None
        c.gen += 1
        self._forget_record(c.target, inst.record)
        replaced = self._running_record(c.target)
        if replaced is not None:  # the operator restarted it (restart, start-all): follow the new one
            self.progress.event(c.target.name, f"pid {inst.record.pid} replaced by pid {replaced.pid}")
            self._adopt(c, replaced)
            return
        intent = desired.load(self.logs).get(c.target.id)
        if intent is None or intent.want != desired.UP:
            self._let_go(c, f"stopped by the operator ({intent.by if intent else 'no intent'}): {death.description}")
            return
        self._failure(c, death.description, death.code, death.signal, self._tail(inst))

    def _tail(self, inst: _Instance) -> list[str]:
        return records.tail(records.log_path(self.logs, inst.record.name, inst.record.prefix),
                            lifecycle.LOG_TAIL_LINES, inst.record.log_offset)

    def _forget_record(self, target: Target, record: records.EngineRecord) -> None:
        """Remove the record of a process that ended, unless it already describes another."""
        try:
            current = records.load(self.logs, target.name, target.prefix)
        except records.BadRecord:
            return
        if current is not None and current.pid == record.pid and current.create_time == record.create_time:
            records.remove(self.logs, target.name, target.prefix)

    # ---------------------------------------------------------------------------- containers

    def _container(self, service: str) -> _Component:
        """The view of a compose service, made when its first event arrives."""
        target = Target("compose", service)
        c = self.components.get(target.id)
        if c is None:
            view = ComponentState(target.id, "compose", service, RUNNING, since=self.wall())
            c = self.components[target.id] = _Component(target, view)
            self.state.components[target.id] = view
            c.healthy_since = self.clock()
        return c

    def _on_container(self, service: str, action: str, exit_code: int | None) -> None:
        """The engine restarts containers (compose's restart policy); the supervisor only counts
        and reports: a die, a start after a die, a crash loop. It never starts, stops or
        restarts a container itself."""
        c = self._container(service)
        intent = desired.load(self.logs).get(c.target.id)
        if intent is not None and intent.want == desired.DOWN:
            self._set(c, STOPPED, f"the operator's intent is down ({intent.by})")
            return
        now, wall = self.clock(), self.wall()
        if action == "start":
            if c.view.state in (BACKOFF, FAILED):
                c.view.restarts += 1
                c.view.last_restart = wall
                c.healthy_since = now
                if c.view.state == BACKOFF:
                    self._set(c, RUNNING, "restarted by the engine's restart policy")
                    self._alert(c, "recovery", f"container {service} running again (restarted by the engine)")
            return
        what = f"container exited with code {exit_code}" if exit_code is not None else "container died"
        c.failures = policies.prune(self.policy, c.failures, now) + [now]
        c.healthy_since = None
        c.view.history = (c.view.history + [supervision.Exit(wall, what, exit_code, None)])[-supervision.HISTORY:]
        self.progress.event(service, f"{what} ({len(c.failures)} in {self.policy.window:g}s)")
        self._alert(c, "crash", what)
        if len(c.failures) >= self.policy.max_failures:
            if c.view.state != FAILED:
                c.failed_at = wall
                detail = (f"crash loop: {len(c.failures)} exits within {self.policy.window:g}s; the engine's "
                          f"restart policy keeps restarting it (kitty-ops does not fight it); "
                          f"exits: {c.view.crash_history(len(c.failures))}")
                self._set(c, FAILED, detail, Runbook.CRASH_LOOP)
                self.progress.event(service, f"{detail}; see {Runbook.CRASH_LOOP.path}")
                self._alert(c, "give-up", detail)
            return
        self._set(c, BACKOFF, f"{what}; the engine's restart policy restarts it", Runbook.CONTAINER_FAILED)

    def _reconcile_container(self, c: _Component, intent: desired.Intent | None) -> None:
        if c.view.state == FAILED:
            asked = intent is not None and intent.want == desired.UP and c.failed_at is not None \
                and intent.at > c.failed_at
            calm = c.healthy_since is not None and self.clock() - c.healthy_since >= self.policy.backoff_reset
            if asked or calm:
                c.failures, c.failed_at = [], None
                self._set(c, RUNNING, "the operator asked again" if asked else
                          f"running for {self.policy.backoff_reset:g}s without an exit")

    # ------------------------------------------------------------------------------- failure

    def _failure(self, c: _Component, what: str, code: int | None = None, sig: int | None = None,
                 log_tail: list[str] | None = None) -> None:
        now, wall = self.clock(), self.wall()
        healthy_for = now - c.healthy_since if c.healthy_since is not None else None
        c.healthy_since = None
        c.streak = policies.next_streak(self.policy, c.streak, healthy_for)
        c.failures = policies.prune(self.policy, c.failures, now) + [now]
        decision = policies.decide(self.policy, c.failures, now, c.streak)
        runbook = c.target.crash_runbook
        if memory.says_out_of_memory(log_tail or []):
            runbook, what = Runbook.OUT_OF_MEMORY, f"{what} (its log says: out of memory)"
        c.view.history = (c.view.history + [supervision.Exit(wall, what, code, sig)])[-supervision.HISTORY:]
        self._set(c, c.view.state, what, runbook)
        last_line = f"; last log line: {log_tail[-1].strip()[:160]}" if log_tail else ""
        self.progress.event(c.target.name, f"failed: {what}{last_line}")
        self._alert(c, "crash", what)
        if decision.give_up:
            c.failed_at = wall
            c.recovering = False
            detail = (f"crash loop: {decision.recent} failures within {self.policy.window:g}s "
                      f"(KITTY_SUPERVISE_MAX_FAILURES={self.policy.max_failures}); no more restarts until "
                      f"`kitty-ops restart {c.target.name}`; exits: {c.view.crash_history(decision.recent)}")
            self._set(c, FAILED, detail, Runbook.CRASH_LOOP)
            self.progress.event(c.target.name, f"{detail}; see {Runbook.CRASH_LOOP.path}")
            self._alert(c, "give-up", detail)
            return
        c.backoff_until = now + decision.delay
        c.after_failure = True
        self._set(c, BACKOFF, f"{what}; restart in {decision.delay:g}s", runbook)
        self.progress.event(c.target.name, f"restart in {decision.delay:g}s (failure {decision.recent} "
                                           f"of {self.policy.max_failures} allowed in {self.policy.window:g}s)")

