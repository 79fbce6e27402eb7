"""`kitty-ops supervise`: one supervisor per project (a lock of its own, `.logs/supervise.lock`,
held for as long as it runs; a second exits at once naming the first one's pid), then the stack
started like `start` (the same graph, checks and project lock; what already runs and is ours is
adopted, not restarted), then the loop (kitty_ops.supervise.loop) until SIGTERM or SIGINT.

On exit the stack keeps running unless `--stop-on-exit` (the service's default): then it is
stopped like `stop` (drained, reverse order), and that stop writes "down" in the operator's
intent. A supervisor killed with SIGKILL runs no code at all: the servers, in their own
sessions, keep running, and the next supervisor adopts them.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from typing import Callable

from kitty_ops.config import Settings
from kitty_ops.exitcodes import Exit
from kitty_ops.host import lock, supervision
from kitty_ops.llama import validate
from kitty_ops.outcomes import Action, Progress, Result
from kitty_ops.problems import Problem
from kitty_ops.runbooks import Runbook
from kitty_ops.stack import run as stack
from kitty_ops.supervise import loop


@dataclasses.dataclass
class Ended:
    exit: Exit
    message: str = ""
    start: Result | None = None
    stop: Result | None = None


def supervise(settings: Settings, problems: list[Problem], selection: stack.Selection,
              progress: Progress, stop_on_exit: bool, start_first: bool = True,
              on_started: Callable[[Result], None] = lambda result: None) -> Ended:
    """Runs until SIGTERM/SIGINT (installed here: call from the main thread)."""
    try:
        with lock.held(supervision.lock_path(settings.logs_dir), 0, "supervise"):
            return _supervise(settings, problems, selection, progress, stop_on_exit, start_first, on_started)
    except lock.LockBusy as exc:
        return Ended(Exit.BUSY, f"another supervisor runs for this project ({exc.holder}); this one exits. "
                                f"Stop that one first (or leave it: one is enough); see {Runbook.SERVICE.path}")


def _supervise(settings, problems, selection, progress, stop_on_exit, start_first, on_started) -> Ended:
    stop = threading.Event()
    started = None
    if start_first:
        _raise_on_signals()  # during the start, SIGTERM is Ctrl+C: start rolls back what it started
        try:
            started = stack.start(settings, problems, selection, progress)
        except KeyboardInterrupt:
            return Ended(Exit.INTERRUPTED, "interrupted during the start: what it started was stopped again")
        on_started(started)
        running = [o for o in started.outcomes if o.ok]
        if not started.outcomes or any(o.action is Action.FAILED or not o.ok for o in started.outcomes):
            # Nothing half-started is left (start rolled back); a service manager retries later.
            return Ended(started.exit if started.exit != Exit.OK else Exit.FAILED,
                         "the start failed; nothing was left running, nothing is supervised", start=started)
        progress.event("supervise", f"{len(running)} component(s) up; supervising")
    _set_on_signals(stop)
    specs = [s for s in settings.enabled_servers]
    engine = None
    if specs:
        report = validate.check(settings, problems, specs)
        engine = report.engine
        if engine is None:
            return Ended(Exit.CONFIG, "; ".join(p.message for p in report.problems if p.is_error)[:500]
                         or "the llama-server engine cannot be used", start=started)
    names = _selected_names(settings, selection)
    supervisor = loop.Supervisor(settings, loop.targets_for(settings, names), engine, progress,
                                 stop_on_exit=stop_on_exit)
    supervisor.run(stop)
    progress.event("supervise", "signal received: " + ("stopping the stack" if stop_on_exit else
                                                        "the stack keeps running"))
    if not stop_on_exit:
        return Ended(Exit.OK, "supervisor stopped; the stack keeps running", start=started)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stop must finish; its waits have deadlines
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stopped = stack.stop(settings, selection, progress)
    return Ended(stopped.exit, "supervisor and stack stopped", start=started, stop=stopped)


def _selected_names(settings: Settings, selection: stack.Selection) -> set[str] | None:
    if not selection.only and not selection.skip:
        return None
    llama = {s.name for s in settings.enabled_servers}
    natives = {s.name for s in settings.images.services} if settings.images.enabled else set()
    tiers = {"llama": llama, "native": natives, "compose": set()}
    expand = lambda names: set().union(*[tiers.get(n, {n}) for n in names]) if names else set()  # noqa: E731
    chosen = expand(selection.only) if selection.only else llama | natives
    return chosen - expand(selection.skip)


def _raise_on_signals() -> None:
    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _set_on_signals(stop: threading.Event) -> None:
    def handler(signum, frame):  # noqa: ARG001
        stop.set()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGHUP, handler)

