"""The supervisor's own state file, `.logs/supervisor.json`: what `kitty-ops supervise` is doing
for each component (state, restarts, last exit, crash history). The supervisor writes it
(atomically, 0600) after every change; `status` and `health` read it.

A state file is believed only while the supervisor that wrote it is alive and provably that
process (its pid and start time, as for the servers' records): the file of a supervisor that
died says nothing about now, so readers then see "not supervised". The next supervisor carries
the restart counts and the crash history over.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from kitty_ops.host import procs
from kitty_ops.host.records import write_atomic

SCHEMA = 1
HISTORY = 10  # exits kept per component

# Component states.
RUNNING = "running"  # alive and healthy (or alive with no health endpoint)
STARTING = "starting"  # spawned or adopted while loading: waiting for health
BACKOFF = "backoff"  # failed; the next start waits for its delay (WARNING)
FAILED = "failed"  # crash loop: no more restarts until the operator asks (CRITICAL)
STOPPING = "stopping"  # hung: being stopped before its restart
STOPPED = "stopped"  # the operator's intent is "down" (or no intent): not brought back


@dataclasses.dataclass
class Exit:
    at: float  # wall clock
    what: str  # "killed by SIGKILL", "exited with status 1", "hung: 3 failed /health probes"
    code: int | None = None
    signal: int | None = None


@dataclasses.dataclass
class ComponentState:
    id: str  # graph node id: llama:q4, native:images-api
    tier: str
    name: str
    state: str = STOPPED
    pid: int | None = None
    restarts: int = 0
    since: float = 0.0  # wall clock of entering `state`
    last_restart: float | None = None  # wall clock of the supervisor's last restart of it
    backoff_until: float | None = None  # wall clock
    detail: str = ""
    runbook: str | None = None
    history: list[Exit] = dataclasses.field(default_factory=list)  # newest last

    @property
    def last_exit(self) -> Exit | None:
        return self.history[-1] if self.history else None

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        last = self.last_exit
        data["last_exit"] = dataclasses.asdict(last) if last else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ComponentState":
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["history"] = [Exit(**{k: v for k, v in e.items() if k in ("at", "what", "code", "signal")})
                             for e in data.get("history") or []]
        return cls(**values)

    def crash_history(self, count: int = 5) -> str:
        """The last `count` exits, oldest first."""
        return "; ".join(e.what for e in self.history[-max(1, count):])


@dataclasses.dataclass
class SupervisorState:
    pid: int
    create_time: float
    started_at: float  # wall clock
    updated_at: float
    components: dict[str, ComponentState]
    stop_on_exit: bool = False

    def as_dict(self) -> dict:
        return {"schema": SCHEMA, "pid": self.pid, "create_time": self.create_time,
                "started_at": self.started_at, "updated_at": self.updated_at,
                "stop_on_exit": self.stop_on_exit,
                "components": {k: c.as_dict() for k, c in sorted(self.components.items())}}


def path(logs_dir: Path) -> Path:
    return logs_dir / "supervisor.json"


def lock_path(logs_dir: Path) -> Path:
    """Held by the one supervisor of a project for as long as it runs."""
    return logs_dir / "supervise.lock"


def save(logs_dir: Path, state: SupervisorState) -> None:
    write_atomic(path(logs_dir), json.dumps(state.as_dict(), indent=2) + "\n")


def load(logs_dir: Path) -> SupervisorState | None:
    """The last state written, alive or not; None when there is none or it is unreadable."""
    try:
        data = json.loads(path(logs_dir).read_text())
        components = {k: ComponentState.from_dict(v) for k, v in (data.get("components") or {}).items()}
        return SupervisorState(int(data["pid"]), float(data["create_time"]), float(data["started_at"]),
                               float(data["updated_at"]), components, bool(data.get("stop_on_exit")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def live(logs_dir: Path) -> SupervisorState | None:
    """The state, only while the supervisor that wrote it still runs (pid and start time)."""
    state = load(logs_dir)
    if state is None:
        return None
    if procs.check(procs.Identity(state.pid, state.create_time, ())) is not procs.Liveness.OURS:
        return None
    return state
