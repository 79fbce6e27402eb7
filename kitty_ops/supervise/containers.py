"""The container tier under supervision: `docker events` for the compose project (die and
start), one JSON line each, turned into reports for the loop. Compose's restart policy
(`restart: unless-stopped`) and the engine restart containers; the supervisor counts the exits
and the restarts and reports a crash loop, and never starts, stops or restarts a container
itself (it would fight the engine). Only the project named by KITTY_COMPOSE_PROJECT is followed.

The stream is our own child (`docker events`); when it ends (the daemon restarted, Docker
Desktop quit) it is started again after STREAM_RETRY seconds, until the supervisor stops.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading

from kitty_ops.config import Settings
from kitty_ops.containers.compose import SERVICE_LABEL, Compose
from kitty_ops.outcomes import Progress

STREAM_RETRY = 5.0


def parse(line: str) -> tuple[str, str, int | None] | None:
    """Pure: (service, action, exit code) of a die or start event line; None for anything else."""
    try:
        event = json.loads(line)
        action = event.get("status") or event.get("Action")
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        service = attributes.get(SERVICE_LABEL, "")
        if action not in ("die", "start") or not service or attributes.get("com.docker.compose.oneoff") == "True":
            return None
        code = attributes.get("exitCode")
        return service, action, int(code) if code not in (None, "") else None
    except (ValueError, AttributeError, TypeError):
        return None


class Follower:
    def __init__(self, settings: Settings, reports: queue.SimpleQueue, progress: Progress,
                 stop: threading.Event):
        self.compose = Compose(settings.compose)
        self.reports = reports
        self.progress = progress
        self.stop = stop
        self.closed = threading.Event()
        self.stream: subprocess.Popen | None = None
        threading.Thread(target=self._run, name="docker-events", daemon=True).start()

    def _run(self) -> None:
        warned = False
        while not (self.stop.is_set() or self.closed.is_set()):
            self.stream = self.compose.events()
            if self.stream is None:
                if not warned:
                    self.progress.event("compose", "cannot follow `docker events`; containers are not "
                                                   "supervised until it works (retrying)")
                    warned = True
            else:
                for line in self.stream.stdout:
                    found = parse(line)
                    if found is not None:
                        self.reports.put(("container", *found))
                self.stream.wait()
            self.closed.wait(STREAM_RETRY)

    def close(self) -> None:
        self.closed.set()
        stream = self.stream
        if stream is not None and stream.poll() is None:
            stream.terminate()  # our own child: `docker events`
            try:
                stream.wait(timeout=5)
            except subprocess.TimeoutExpired:
                stream.kill()
                stream.wait(timeout=5)


def follow(settings: Settings, reports: queue.SimpleQueue, progress: Progress,
           stop: threading.Event) -> Follower:
    return Follower(settings, reports, progress, stop)
