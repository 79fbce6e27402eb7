"""Start and stop the native llama-server tier.

start: validate everything first, then spawn every server that is not already running, then
wait for all of them concurrently. It is all-or-nothing for this invocation: when one server
fails (dies while loading, misses the deadline) or the operator presses Ctrl+C, every server this
invocation started is stopped again. Servers that were already running, healthy and proven ours
are reported and left alone. A server counts as started once it is healthy and what it runs
on is read from its log into its record (kitty_ops.llama.verify); with REQUIRE_GPU a server that
fell back to the CPU, or offloaded fewer layers than asked, fails the start, and so does one
started with --metrics whose /metrics does not answer.

stop: SIGTERM to each server's process group, the grace period, then SIGKILL; all servers at
once; PID files removed; ports checked free. A PID that cannot be proven ours is never signalled.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from kitty_ops.config import ServerSpec, Settings
from kitty_ops.exitcodes import Exit
from kitty_ops.host import lock, ports, probes, procs, records
from kitty_ops.llama import command, drain, memory, offload, validate, verify
from kitty_ops.outcomes import Action, Outcome, Progress, Result, Silent
from kitty_ops.problems import Problem
from kitty_ops.runbooks import Runbook

KILL_WAIT = 5.0  # after SIGKILL the kernel needs only moments; longer means a stuck (D-state) process
PORT_RELEASE_WAIT = 2.0
LOG_TAIL_LINES = 15


# --------------------------------------------------------------------------------------- start

@dataclasses.dataclass
class _Launch:
    """A server this invocation is waiting on: one it spawned (popen set) or one found loading."""

    spec: ServerSpec
    record: records.EngineRecord
    popen: subprocess.Popen | None

    def wait_exit(self, seconds: float) -> str | None:
        if self.popen is not None:
            try:
                return procs.exit_description(self.popen.wait(timeout=seconds))
            except subprocess.TimeoutExpired:
                return None
        gone = procs.wait_gone(self.record.identity, time.monotonic() + seconds)
        return "exited" if gone else None


def start(settings: Settings, config_problems: list[Problem], specs: list[ServerSpec],
          progress: Progress = Silent(), cancel: threading.Event | None = None) -> Result:
    """Raises lock.LockBusy when another run holds the lock, KeyboardInterrupt after cleaning up."""
    with lock.held(lock.project_lock(settings.logs_dir), settings.lock_timeout, "start"):
        report = validate.check(settings, config_problems, specs)
        if not report.ok:
            return Result("start", Exit.CONFIG, [], report.problems)
        return start_validated(settings, report, specs, progress, cancel)


def start_validated(settings: Settings, report: validate.Report, specs: list[ServerSpec],
                    progress: Progress = Silent(), cancel: threading.Event | None = None,
                    on_ready: Callable[[str], None] = lambda name: None) -> Result:
    """The body of start, for a caller that holds the lock and has validated. `on_ready(name)` is
    called as each server turns healthy (the stack's graph starts its dependents then); setting
    `cancel` stops the waits and rolls back what this call started."""
    warnings = [p for p in report.problems if not p.is_error]
    outcomes, launches = _adopt_running(settings, specs, progress)
    for outcome in outcomes.values():
        on_ready(outcome.name)
    cancel = cancel or threading.Event()
    spawned: list[_Launch] = []
    try:
        adopted = set(outcomes) | {launch.spec.name for launch in launches}
        to_spawn = [spec for spec in specs if spec.name not in adopted]
        for spec in to_spawn:
            failure = _spawn(settings, spec, report.engine, progress, spawned)
            if failure is not None:
                outcomes[spec.name] = failure
                break
        launches += spawned
        if all(o.ok for o in outcomes.values()):  # no spawn failed outright
            outcomes.update(_wait_all(settings, launches, progress, cancel, on_ready))
        failed = [o for o in outcomes.values() if not o.ok]
        if failed:
            broken = [o for o in failed if o.action is Action.FAILED]
            why = f"{broken[0].name} failed" if broken else "the start was cancelled"
            for outcome in _roll_back(settings, spawned, progress, why):
                earlier = outcomes.get(outcome.name)
                if earlier is None or earlier.action is not Action.FAILED:
                    outcomes[outcome.name] = outcome
    except BaseException:
        # Ctrl+C, SIGTERM or a bug: nothing this run started may outlive it. Rolling back
        # twice is harmless (a stopped child is not signalled again).
        cancel.set()
        _roll_back(settings, spawned, progress, "interrupted")
        raise
    ordered = [outcomes[s.name] for s in specs if s.name in outcomes]
    return Result("start", Exit.FAILED if failed else Exit.OK, ordered, warnings)


def _adopt_running(settings: Settings, specs: list[ServerSpec],
                   progress: Progress) -> tuple[dict[str, Outcome], list[_Launch]]:
    """Servers already running and ours: healthy ones are reported, loading ones waited on.
    Records of dead processes, or of PIDs now owned by something else, are removed unsignalled."""
    outcomes: dict[str, Outcome] = {}
    launches: list[_Launch] = []
    for spec in specs:
        record = _load_or_discard(settings.logs_dir, spec.name, progress)
        if record is None:
            continue
        state = procs.check(record.identity)
        if state is not procs.Liveness.OURS:
            records.remove(settings.logs_dir, spec.name)
            why = "has exited" if state is procs.Liveness.GONE else "now belongs to another process"
            progress.event(spec.name, f"removed stale PID files (pid {record.pid} {why}; not signalled)")
            continue
        health = probes.probe_health(record.url, timeout=2.0)
        notes = []
        if record.argv[1:] != command.build_argv(spec, record.argv[0])[1:]:
            notes.append("running with settings older than the configuration: "
                         f"stop-all then start-all (or `kitty-ops stop --only {spec.name}`) to apply")
        if health.health is probes.Health.READY:
            progress.event(spec.name, f"already running and healthy (pid {record.pid})")
            outcomes[spec.name] = Outcome(spec.name, Action.ALREADY_RUNNING, True, record.port,
                                          record.url, record.pid, 0.0, "already running", notes=notes)
        else:
            progress.event(spec.name, f"already running (pid {record.pid}), {health.health.value}: waiting")
            launches.append(_Launch(spec, record, None))
    return outcomes, launches


def _load_or_discard(logs_dir: Path, name: str, progress: Progress) -> records.EngineRecord | None:
    try:
        record = records.load(logs_dir, name)
    except records.BadRecord as exc:
        records.remove(logs_dir, name)
        progress.event(name, f"removed unreadable record ({exc}); nothing signalled")
        return None
    if record is None and records.bare_pid(logs_dir, name) is not None:
        # A PID file with no identity record proves nothing: drop it, never signal it.
        records.remove(logs_dir, name)
        progress.event(name, "removed a PID file that had no identity record (not signalled)")
    return record


def spawn_one(settings: Settings, spec: ServerSpec, engine: command.EngineInfo,
              progress: Progress) -> tuple[records.EngineRecord, subprocess.Popen] | Outcome:
    """Spawn one server and write its record, without waiting for it (the supervisor's restart:
    it holds the lock for this part only and waits for health on its own). An Outcome when it
    exited at once."""
    spawned: list[_Launch] = []
    failure = _spawn(settings, spec, engine, progress, spawned)
    if failure is not None:
        return failure
    return spawned[0].record, spawned[0].popen


# llama.cpp's "trace" verbosity. Current builds log the model's devices and offload
# (`load_tensors: offloaded 81/81 layers to GPU`, the buffer lines) at 4, not at their default 3,
# and what a server runs on is read from those lines (kitty_ops.llama.offload). An environment
# variable, not a flag: the argv stays as it was (records, adoption), builds without it ignore it,
# and an operator's own LLAMA_ARG_LOG_VERBOSITY or `-lv N` in EXTRA_ARGS (the flag wins) still rules.
LOG_VERBOSITY = "4"


def server_environment(spec: ServerSpec) -> dict[str, str]:
    """The server's environment: kitty-ops's own, with the API key as LLAMA_API_KEY when one is
    configured (never in argv, which every user can read with ps) and no inherited one otherwise,
    and the log verbosity that shows its devices."""
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_API_KEY"}
    if spec.api_key:
        env["LLAMA_API_KEY"] = spec.api_key
    env.setdefault("LLAMA_ARG_LOG_VERBOSITY", LOG_VERBOSITY)
    return env


def _spawn(settings: Settings, spec: ServerSpec, engine: command.EngineInfo,
           progress: Progress, spawned: list[_Launch]) -> Outcome | None:
    argv = command.build_argv(spec, engine.binary_path)
    log = records.log_path(settings.logs_dir, spec.name)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"\n=== kitty-ops {stamp}: starting {spec.name}: {' '.join(command.redact(argv))}\n")
        offset = handle.tell()
    popen = procs.spawn_detached(argv, log, cwd=settings.project_dir, env=server_environment(spec))
    try:
        identity = procs.identity_after_spawn(popen)
        if identity is None:
            # psutil saw no live process: it has exited, so this wait only collects the status.
            description = procs.exit_description(popen.wait(timeout=KILL_WAIT))
            return _failure(spec, popen.pid, 0.0, f"exited at once ({description})", log, offset,
                            Runbook.SERVER_CRASH)
        record = records.EngineRecord(
            name=spec.name, pid=popen.pid, create_time=identity.create_time,
            cmdline=list(identity.args), argv=argv, port=spec.port, url=spec.url,
            model=str(spec.model), mmproj=str(spec.mmproj) if spec.mmproj else None,
            engine_version=engine.version, binary=engine.binary_path, log=str(log),
            log_offset=offset, started_at=time.time(),
        )
        records.save(settings.logs_dir, record)
        spawned.append(_Launch(spec, record, popen))  # from here on, roll-back covers it
    except BaseException:
        # Interrupted before roll-back knew of it: our own unreaped child, safe to kill.
        procs.kill_child_group(popen, KILL_WAIT)
        records.remove(settings.logs_dir, spec.name)
        raise
    progress.event(spec.name, f"started pid {popen.pid} on {spec.url}; loading {spec.model.name}")
    return None


def _failure(spec: ServerSpec, pid: int | None, seconds: float, detail: str, log: Path,
             offset: int, runbook: Runbook) -> Outcome:
    tail = records.tail(log, LOG_TAIL_LINES, offset)
    if runbook is Runbook.SERVER_CRASH and memory.says_out_of_memory(tail):
        runbook = Runbook.OUT_OF_MEMORY
    return Outcome(spec.name, Action.FAILED, False, spec.port, spec.url, pid, seconds, detail,
                   tail, runbook)


def _wait_all(settings: Settings, launches: list[_Launch], progress: Progress,
              cancel: threading.Event, on_ready: Callable[[str], None]) -> dict[str, Outcome]:
    """Wait for every launch at once; the first failure cancels the others."""
    if not launches:
        return {}
    deadline = time.monotonic() + settings.health_timeout
    outcomes: dict[str, Outcome] = {}
    # The waits end on the caller's cancel or when this wait is over; a failure here also sets
    # the caller's cancel, since the rest of a start must not go on without this server.
    done_waiting = threading.Event()
    stop_waits = _Either(cancel, done_waiting)

    def wait_one(launch: _Launch) -> Outcome:
        name = launch.spec.name

        def on_health(health: probes.Health, detail: str) -> None:
            if health is probes.Health.LOADING:
                progress.event(name, "port open, model loading")

        result = probes.wait_ready(launch.record.url, deadline, launch.wait_exit, stop_waits, on_health)
        record = launch.record
        log = Path(record.log)
        if result.outcome is probes.Outcome.READY:
            refused = _check_ready(settings, launch, progress, result.seconds)
            if refused is not None:
                return refused
            record = launch.record
            progress.event(name, f"healthy after {result.seconds:.1f}s")
            on_ready(name)
            return Outcome(name, Action.STARTED, True, record.port, record.url, record.pid,
                           result.seconds, "healthy")
        if result.outcome is probes.Outcome.DIED:
            return _failure(launch.spec, record.pid, result.seconds,
                            f"exited while loading ({result.detail})", log, record.log_offset,
                            Runbook.SERVER_CRASH)
        if result.outcome is probes.Outcome.TIMEOUT:
            return _failure(launch.spec, record.pid, result.seconds,
                            f"{result.detail}; LLAMACPP_HEALTH_TIMEOUT is {settings.health_timeout:g}s",
                            log, record.log_offset, Runbook.SERVER_TIMEOUT)
        return Outcome(name, Action.ROLLED_BACK, False, record.port, record.url, record.pid,
                       result.seconds, "cancelled")

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(launches), thread_name_prefix="wait")
    try:
        pending = {pool.submit(wait_one, launch) for launch in launches}
        while pending:
            # A short timeout keeps the main thread responsive to Ctrl+C.
            done, pending = concurrent.futures.wait(pending, timeout=0.2,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                outcome = future.result()
                outcomes[outcome.name] = outcome
                if not outcome.ok:
                    cancel.set()
    finally:
        done_waiting.set()
        pool.shutdown(wait=True)
    return outcomes


def _check_ready(settings: Settings, launch: _Launch, progress: Progress, seconds: float) -> Outcome | None:
    """A healthy server, before it counts as started: what it runs on (its log, kept in its
    record for `status`), then what its settings demand of that: the GPU (REQUIRE_GPU) and a
    /metrics that answers (--metrics). An Outcome when it falls short; its roll-back is start's."""
    spec, record = launch.spec, launch.record
    found = verify.offload_of(record)
    launch.record = record = dataclasses.replace(record, offload=found.as_dict())
    try:
        records.save(settings.logs_dir, record)
    except OSError as exc:  # status then reads the log itself; nothing else depends on it
        progress.event(spec.name, f"could not keep what it runs on in its record: {exc}")
    progress.event(spec.name, f"runs on {found.describe() or 'a device its log does not name'}"
                              + (f" ({', '.join(found.devices)})" if found.on_gpu and found.devices else ""))

    def refuse(detail: str, lines: list[str], runbook: Runbook) -> Outcome:
        return Outcome(spec.name, Action.FAILED, False, record.port, record.url, record.pid, seconds,
                       detail, lines, runbook)

    if spec.require_gpu:
        why = offload.gpu_shortfall(found, offload.asked_layers(record.argv))
        if why is not None:
            lines = list(found.evidence) or records.tail(Path(record.log), LOG_TAIL_LINES, record.log_offset)
            return refuse(f"{spec.var_prefix}REQUIRE_GPU (or LLAMACPP_REQUIRE_GPU) says it must run on the "
                          f"GPU, but {why}", lines, Runbook.CPU_FALLBACK)
    if "--metrics" in record.argv:
        problem = verify.metrics_problem(record.url, spec.auth)
        if problem is not None:
            return refuse(f"started with --metrics ({spec.var_prefix}METRICS), but {problem}; set "
                          f"{spec.var_prefix}METRICS=false to start it without, or use an engine that serves "
                          "/metrics", [], Runbook.ENGINE_BINARY)
    return None


class _Either:
    """Looks like a threading.Event to probes.wait_ready: set when either event is."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def _roll_back(settings: Settings, spawned: list[_Launch], progress: Progress,
               why: str) -> list[Outcome]:
    """Stop what this invocation started. These are our own unreaped children, so their PIDs
    cannot have been reused: signalling them is safe even before a record was written."""
    def stop(launch: _Launch) -> Outcome:
        outcome = terminate(settings, launch.record, launch.popen, progress)
        outcome.action = Action.ROLLED_BACK
        outcome.ok = False
        outcome.detail = f"stopped again: {why}"
        return outcome

    if not spawned:
        return []
    progress.event("*", f"stopping {len(spawned)} server(s) started by this run: {why}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(spawned)) as pool:
        return list(pool.map(stop, spawned))


# ---------------------------------------------------------------------------------------- stop

def stop(settings: Settings, names: list[str], progress: Progress = Silent()) -> Result:
    """Stop the named servers (all enabled and all recorded ones when `names` is empty)."""
    with lock.held(lock.project_lock(settings.logs_dir), settings.lock_timeout, "stop"):
        return stop_servers(settings, names or all_server_names(settings), progress)


def all_server_names(settings: Settings) -> list[str]:
    # Enabled servers, plus anything with a record: a server disabled or removed from the
    # configuration since it was started must still be stoppable.
    enabled = [s.name for s in settings.enabled_servers]
    return enabled + [n for n in records.recorded_names(settings.logs_dir) if n not in enabled]


def stop_servers(settings: Settings, names: list[str], progress: Progress = Silent()) -> Result:
    """stop without the lock (the caller holds it): all named servers at once."""
    if not names:
        return Result("stop", Exit.OK, [])
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(names)) as pool:
        outcomes = list(pool.map(lambda n: stop_one(settings, n, progress), names))
    failed = any(not o.ok for o in outcomes)
    return Result("stop", Exit.FAILED if failed else Exit.OK, outcomes)


def stop_one(settings: Settings, name: str, progress: Progress) -> Outcome:
    spec = settings.server(name)
    port, url = (spec.port, spec.url) if spec else (0, "")
    record = _load_or_discard(settings.logs_dir, name, progress)
    if record is None:
        return Outcome(name, Action.NOT_RUNNING, True, port, url, detail="not running")
    state = procs.check(record.identity)
    if state is not procs.Liveness.OURS:
        records.remove(settings.logs_dir, name)
        why = "had already exited" if state is procs.Liveness.GONE else "now belongs to another process; not signalled"
        progress.event(name, f"pid {record.pid} {why}; removed its PID files")
        return Outcome(name, Action.NOT_RUNNING, True, record.port, record.url, record.pid,
                       detail=f"stale record removed (pid {record.pid} {why})", runbook=Runbook.STALE_PID)
    drained = _drain(settings, spec, record, progress)
    outcome = terminate(settings, record, None, progress)
    if drained is not None:
        outcome.drain = drained.as_dict()
        if drained.waited_for_answers:
            outcome.detail = f"{drained.describe()}; {outcome.detail}"
    return outcome


def _drain(settings: Settings, spec: ServerSpec | None, record: records.EngineRecord,
           progress: Progress) -> drain.Drained | None:
    """Wait until the server writes no answer (see kitty_ops.llama.drain); None with --no-drain."""
    if not settings.drain:
        return None

    def report(in_flight: int, left: float) -> None:
        progress.event(record.name, f"draining: {in_flight} request{'' if in_flight == 1 else 's'} "
                                    f"in flight, {left:.0f}s left")

    drained = drain.wait_idle(lambda: drain.in_flight(record.url, headers=spec.auth if spec else None),
                              spec.drain_timeout if spec else settings.drain_timeout,
                              lambda: procs.check(record.identity) is procs.Liveness.OURS, report)
    progress.event(record.name, drained.describe())
    return drained


def terminate(settings: Settings, record: records.EngineRecord,
               popen: subprocess.Popen | None, progress: Progress) -> Outcome:
    """SIGTERM the group, wait the grace, SIGKILL, wait; remove the PID files; check the port."""
    started = time.monotonic()
    identity = record.identity
    escalated = False

    def send(sig: int) -> bool:
        if popen is not None:
            # Our own unreaped child: its PID cannot have been reused, so no identity proof needed.
            if popen.poll() is not None:
                return False
            try:
                os.killpg(popen.pid, sig)
            except ProcessLookupError:
                return False
            return True
        return procs.signal_group(identity, sig)

    def gone_by(deadline: float) -> bool:
        if popen is not None:
            try:
                popen.wait(timeout=max(0.0, deadline - time.monotonic()))
                return True
            except subprocess.TimeoutExpired:
                return False
        return procs.wait_gone(identity, deadline)

    try:
        if send(signal.SIGTERM):
            progress.event(record.name, f"SIGTERM sent to pid {record.pid}")
            if not gone_by(started + settings.stop_grace):
                escalated = True
                progress.event(record.name, f"still running after {settings.stop_grace:g}s grace: SIGKILL")
                send(signal.SIGKILL)
                if not gone_by(time.monotonic() + KILL_WAIT):
                    return Outcome(record.name, Action.FAILED, False, record.port, record.url,
                                   record.pid, time.monotonic() - started,
                                   f"pid {record.pid} survived SIGKILL (stuck in the kernel?)",
                                   runbook=Runbook.STOP_FAILED)
    except procs.NotOurs as exc:
        records.remove(settings.logs_dir, record.name, record.prefix)
        return Outcome(record.name, Action.NOT_RUNNING, True, record.port, record.url, record.pid,
                       detail=f"{exc}; not signalled, record removed", runbook=Runbook.STALE_PID)
    records.remove(settings.logs_dir, record.name, record.prefix)
    seconds = time.monotonic() - started
    detail = "killed after the grace period" if escalated else "stopped"
    busy = _port_still_busy(record)
    if busy:
        return Outcome(record.name, Action.FAILED, False, record.port, record.url, record.pid,
                       seconds, f"{detail}, but port {record.port} is still in use by {busy}",
                       runbook=Runbook.PORT_CONFLICT)
    progress.event(record.name, f"{detail} in {seconds:.1f}s; port {record.port} free")
    return Outcome(record.name, Action.STOPPED, True, record.port, record.url, record.pid, seconds, detail)


def _port_still_busy(record: records.EngineRecord) -> str | None:
    host = record.url.split("//", 1)[-1].rsplit(":", 1)[0].strip("[]") or "127.0.0.1"
    deadline = time.monotonic() + PORT_RELEASE_WAIT
    while not ports.is_free(host, record.port):
        if time.monotonic() >= deadline:
            holders = ports.holders(record.port)
            return ", ".join(h.describe() for h in holders) or "an unidentified process"
        time.sleep(0.02)
    return None

