"""A problem found while reading or checking configuration: what, where, and what to do."""

from __future__ import annotations

import dataclasses
import enum

from kitty_ops.runbooks import Runbook


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclasses.dataclass(frozen=True)
class Problem:
    severity: Severity
    subject: str  # the variable or file at fault, so the operator knows where to look
    message: str
    fix: str
    runbook: Runbook

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def as_dict(self) -> dict:
        return {
            "severity": self.severity.value,
            "subject": self.subject,
            "message": self.message,
            "fix": self.fix,
            "runbook": self.runbook.path,
        }


def error(subject: str, message: str, fix: str, runbook: Runbook) -> Problem:
    return Problem(Severity.ERROR, subject, message, fix, runbook)


def warning(subject: str, message: str, fix: str, runbook: Runbook) -> Problem:
    return Problem(Severity.WARNING, subject, message, fix, runbook)


def has_errors(problems: list[Problem]) -> bool:
    return any(p.is_error for p in problems)
