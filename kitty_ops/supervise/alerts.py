"""`KITTY_ALERT_COMMAND`: run on crash, restart, give-up and recovery.

The command is an argv (parsed with shlex.split by kitty_ops.config, never run through a shell);
the event travels in environment variables, never in its arguments:

  KITTY_ALERT_EVENT      crash | restart | give-up | recovery
  KITTY_ALERT_COMPONENT  the component (q4, images-api)
  KITTY_ALERT_TIER       llama | native
  KITTY_ALERT_DETAIL     one line: what happened ("killed by SIGKILL", "hung: 3 failed probes")
  KITTY_ALERT_RESTARTS   restarts so far
  KITTY_ALERT_EXIT       the last exit, when there was one
  KITTY_ALERT_RUNBOOK    the runbook to read
  KITTY_ALERT_TIME       when, ISO 8601 UTC

Each run gets its own thread and session, at most `timeout` seconds (then SIGKILL to its own
process group: our own unreaped child, so its PID cannot have been reused), and at most
MAX_RUNNING at once (more are dropped with a line in the supervisor's log): a hung notifier never
delays a restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from datetime import datetime, timezone
from typing import Callable, Mapping, Sequence

MAX_RUNNING = 4
EVENTS = ("crash", "restart", "give-up", "recovery")


def environment(event: str, component: str, tier: str, detail: str, restarts: int, last_exit: str,
                runbook: str, now: float, base: Mapping[str, str]) -> dict[str, str]:
    """Pure: the alert's environment."""
    if event not in EVENTS:
        raise ValueError(f"unknown alert event {event!r}")
    env = dict(base)
    env.update({
        "KITTY_ALERT_EVENT": event, "KITTY_ALERT_COMPONENT": component, "KITTY_ALERT_TIER": tier,
        "KITTY_ALERT_DETAIL": " ".join(detail.split())[:500], "KITTY_ALERT_RESTARTS": str(restarts),
        "KITTY_ALERT_EXIT": last_exit, "KITTY_ALERT_RUNBOOK": runbook,
        "KITTY_ALERT_TIME": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
    })
    return env


class Alerter:
    def __init__(self, argv: Sequence[str], timeout: float, log: Callable[[str], None],
                 cwd: str | None = None):
        self.argv = list(argv)
        self.timeout = timeout
        self.log = log
        self.cwd = cwd
        self.running = 0
        self.guard = threading.Lock()
        self.idle = threading.Condition(self.guard)

    def send(self, env: dict[str, str]) -> bool:
        """Start the alert in the background; False when none is configured or too many run."""
        if not self.argv:
            return False
        with self.guard:
            if self.running >= MAX_RUNNING:
                self.log(f"alert {env.get('KITTY_ALERT_EVENT')} for {env.get('KITTY_ALERT_COMPONENT')} "
                         f"dropped: {MAX_RUNNING} alert commands still running")
                return False
            self.running += 1
        threading.Thread(target=self._run, args=(env,), name="alert", daemon=True).start()
        return True

    def _run(self, env: dict[str, str]) -> None:
        try:
            try:
                popen = subprocess.Popen(self.argv, env=env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         start_new_session=True, close_fds=True)
            except OSError as exc:
                self.log(f"alert command {self.argv[0]!r} cannot run: {exc.strerror or exc}")
                return
            try:
                _, err = popen.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                popen.communicate()
                self.log(f"alert command {self.argv[0]!r} killed after {self.timeout:g}s (KITTY_ALERT_TIMEOUT)")
                return
            if popen.returncode != 0:
                last = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                self.log(f"alert command {self.argv[0]!r} exited with {popen.returncode}: {last[0][:200]}")
        finally:
            with self.guard:
                self.running -= 1
                self.idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """For a supervisor that is exiting: let the alerts under way finish (bounded)."""
        with self.guard:
            return self.idle.wait_for(lambda: self.running == 0, timeout)
