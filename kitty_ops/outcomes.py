"""The words every operation reports in: what it did to each component (Action, Outcome), the
whole run's result with its exit code (Result), and the Progress protocol that live output
implements. Start, stop, restore and the supervisor all speak them; renderers read them."""

from __future__ import annotations

import dataclasses
import enum
from typing import Protocol

from kitty_ops.exitcodes import Exit
from kitty_ops.problems import Problem
from kitty_ops.runbooks import Runbook


class Action(str, enum.Enum):
    STARTED = "started"
    ALREADY_RUNNING = "already-running"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"  # started by this run, stopped again because another server failed
    STOPPED = "stopped"
    NOT_RUNNING = "not-running"


@dataclasses.dataclass
class Outcome:
    name: str
    action: Action
    ok: bool
    port: int
    url: str
    pid: int | None = None
    seconds: float = 0.0
    detail: str = ""
    log_tail: list[str] = dataclasses.field(default_factory=list)
    runbook: Runbook | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    component: str = "llama"  # the tier: llama | native | compose
    drain: dict | None = None  # a llama server's stop: how its drain went (kitty_ops.llama.drain)

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["action"] = self.action.value
        data["runbook"] = self.runbook.path if self.runbook else None
        return data


@dataclasses.dataclass
class Result:
    operation: str
    exit: Exit
    outcomes: list[Outcome]
    problems: list[Problem] = dataclasses.field(default_factory=list)
    # Filled by the whole-stack start/stop (kitty_ops.stack.run); empty for the llama tier alone.
    plan: list[list[str]] = dataclasses.field(default_factory=list)  # start order, level by level
    checks: list = dataclasses.field(default_factory=list)  # checks.Check after a start
    notes: list[str] = dataclasses.field(default_factory=list)


class Progress(Protocol):
    def event(self, name: str, message: str) -> None: ...


class Silent:
    def event(self, name: str, message: str) -> None:
        pass
