"""Renderers: results -> text for people or versioned JSON for machines. No logic, no I/O
beyond the stream they are handed."""

from __future__ import annotations

import os
import queue
import shutil
import sys
import threading
import time
from typing import IO, Iterable

from kitty_ops.formats import size, table, to_json
from kitty_ops.llama.validate import Report
from kitty_ops.outcomes import Result
from kitty_ops.problems import Problem
from kitty_ops.runbooks import Runbook


def problems_text(problems: Iterable[Problem]) -> str:
    lines = []
    for p in problems:
        lines.append(f"{p.severity.value.upper():7} {p.subject}: {p.message}")
        lines.append(f"        fix: {p.fix}")
        lines.append(f"        runbook: {p.runbook.path}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- validate

def validate_text(report: Report, out: IO[str]) -> None:
    settings = report.settings
    out.write(f"Configuration: {settings.env_file}{'' if settings.env_file_found else ' (missing)'}\n")
    if report.engine:
        out.write(f"Engine: {report.engine.binary_path} (version {report.engine.version})\n")
    rows = [(s.name, "yes" if s.enabled else "no", s.port, s.alias, s.model.name or "-",
             size(report.model_bytes.get(s.name))) for s in settings.servers]
    out.write(table(rows, ["NAME", "ENABLED", "PORT", "ALIAS", "MODEL", "SIZE"]) + "\n")
    if report.problems:
        out.write("\n" + problems_text(report.problems) + "\n")
    errors = sum(p.is_error for p in report.problems)
    warnings = len(report.problems) - errors
    verdict = "configuration is valid" if errors == 0 else "configuration has errors"
    out.write(f"\n{verdict}: {errors} error(s), {warnings} warning(s)\n")


def validate_json(report: Report, out: IO[str]) -> None:
    to_json("validate", {
        "ok": report.ok,
        "env_file": str(report.settings.env_file),
        "engine": {"binary": report.engine.binary_path, "version": report.engine.version} if report.engine else None,
        "servers": [{"name": s.name, "enabled": s.enabled, "port": s.port, "alias": s.alias,
                     "model": str(s.model), "model_bytes": report.model_bytes.get(s.name)}
                    for s in report.settings.servers],
        "problems": [p.as_dict() for p in report.problems],
    }, out)


# ---------------------------------------------------------------------------------- start / stop

def result_text(result: Result, out: IO[str], err: IO[str]) -> None:
    if result.problems:
        err.write(problems_text(result.problems) + "\n")
    if result.outcomes:
        rows = [(o.name, o.component, o.action.value, o.pid, o.url or "-", f"{o.seconds:.1f}s", o.detail)
                for o in result.outcomes]
        out.write(table(rows, ["NAME", "TIER", "RESULT", "PID", "URL", "TIME", "DETAIL"]) + "\n")
    if result.checks:
        rows = [(c.name, "ok" if c.ok else "FAILED", f"{c.seconds:.2f}s", c.url or "-", c.detail)
                for c in result.checks]
        out.write("\n" + table(rows, ["CHECK", "RESULT", "TIME", "URL", "DETAIL"]) + "\n")
    for o in result.outcomes:
        for note in o.notes:
            err.write(f"note: {o.name}: {note}\n")
    for note in result.notes:
        err.write(f"note: {note}\n")
    for o in result.outcomes:
        if o.ok or o.action.value == "rolled-back":
            continue
        err.write(f"\n{o.name} {o.action.value}: {o.detail}\n")
        if o.log_tail:
            err.write("  last lines of its log:\n")
            err.writelines(f"    {line}\n" for line in o.log_tail)
        if o.runbook:
            err.write(f"  runbook: {o.runbook.path}\n")
    for c in result.checks:
        if not c.ok and c.runbook:
            err.write(f"\ncheck {c.name} failed: {c.detail}\n  runbook: {c.runbook.path}\n")
    if result.operation == "start" and result.exit == 0 and result.outcomes:
        err.write("\nthe stack is up. Stop with ./ops/scripts/stop-all.sh; watch with "
                  "`kitty-ops status` and `kitty-ops logs NAME -f`.\n")


def result_json(result: Result, out: IO[str]) -> None:
    to_json(result.operation, {
        "ok": result.exit == 0,
        "exit_code": int(result.exit),
        "plan": result.plan,
        "components": [o.as_dict() for o in result.outcomes],
        "checks": [c.as_dict() for c in result.checks],
        "notes": result.notes,
        "problems": [p.as_dict() for p in result.problems],
    }, out)


class LineProgress:
    """Progress while waiting: one plain line per event on stderr, with elapsed time, so it reads
    the same in a log file and in cron mail.

    Events go through a queue to a writer thread: a stalled stderr (a paused terminal, a full
    pipe) blocks only that thread, never a start, a wait or a roll-back."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.writer = threading.Thread(target=self._drain, name="progress", daemon=True)
        self.writer.start()

    def event(self, name: str, message: str) -> None:
        self.queue.put((time.monotonic() - self.started, name, message))

    def close(self, wait: float = 2.0) -> None:
        """Let the writer finish what is queued (bounded: the stream may be stalled)."""
        self.queue.put(None)
        self.writer.join(wait)

    def _drain(self) -> None:
        while (item := self.queue.get()) is not None:
            try:
                self._write(*item)
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed: progress is best effort
                return

    def _write(self, elapsed: float, name: str, message: str) -> None:
        self.stream.write(f"[{elapsed:6.1f}s] {name:<12} {message}\n")


class LiveProgress(LineProgress):
    """On a terminal: one line per component, rewritten in place as its state changes, with the
    plan and check lines kept above it."""

    def __init__(self, stream: IO[str]):
        self.rows: dict[str, tuple[float, str]] = {}
        self.drawn = 0
        super().__init__(stream)

    def _write(self, elapsed: float, name: str, message: str) -> None:
        self._erase()
        if name in ("plan", "check", "*"):  # not a component: printed once above the live block
            self.stream.write(f"[{elapsed:6.1f}s] {name:<12} {message}\n")
        else:
            self.rows[name] = (elapsed, message)
        self._draw()

    def _erase(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")  # up N lines, clear to the end
            self.drawn = 0

    def _draw(self) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        for name, (elapsed, message) in self.rows.items():
            self.stream.write(f"[{elapsed:6.1f}s] {name:<12} {message}"[:width - 1] + "\n")
        self.drawn = len(self.rows)


def progress_for(stream: IO[str]) -> LineProgress:
    """A live display on a terminal, plain lines otherwise (pipes, cron, CI)."""
    is_tty = hasattr(stream, "isatty") and stream.isatty() and os.environ.get("TERM") not in (None, "", "dumb")
    return LiveProgress(stream) if is_tty else LineProgress(stream)


# ------------------------------------------------------------------------------------------ backup

def backup_text(outcome, out: IO[str], err: IO[str]) -> None:
    """A backup, verify or restore: one row per step, then the verdict and what to do."""
    if outcome.steps:
        rows = [(s.name, "ok" if s.ok else "FAILED", f"{s.seconds:.1f}s", s.detail) for s in outcome.steps]
        out.write(table(rows, ["STEP", "RESULT", "TIME", "DETAIL"]) + "\n")
    if outcome.ok:
        where = f": {outcome.path}" if outcome.path else ""
        out.write(f"\n{outcome.operation} ok{where} ({outcome.seconds:.1f}s)\n")
        if outcome.safety:
            out.write(f"the state before the restore is kept in {outcome.safety}\n")
        for name in outcome.pruned:
            out.write(f"pruned old backup {name}\n")
    else:
        err.write(f"\nkitty-ops {outcome.operation}: {outcome.error}\n")
        if outcome.runbook:
            err.write(f"  runbook: {outcome.runbook.path}\n")


def backup_json(outcome, out: IO[str]) -> None:
    to_json(outcome.operation, {
        "ok": outcome.ok, "path": str(outcome.path) if outcome.path else None,
        "steps": [vars(s) for s in outcome.steps], "error": outcome.error or None,
        "runbook": outcome.runbook.path if outcome.runbook else None, "pruned": outcome.pruned,
        "safety_backup": str(outcome.safety) if outcome.safety else None, "seconds": round(outcome.seconds, 3),
    }, out)


def backups_text(found, out: IO[str]) -> None:
    rows = [(b.name, "complete" if b.complete else "INCOMPLETE", b.created_at or "-",
             size(b.size) if b.complete else "-", ",".join(b.parts) or "-", b.detail) for b in found]
    out.write(table(rows, ["NAME", "STATE", "CREATED", "SIZE", "PARTS", "DETAIL"]) + "\n" if rows
              else "no backups yet\n")


def backups_json(found, out: IO[str]) -> None:
    to_json("list-backups", {"backups": [
        {"name": b.name, "path": str(b.path), "complete": b.complete, "created_at": b.created_at or None,
         "size": b.size, "parts": list(b.parts), "detail": b.detail} for b in found]}, out)


# ------------------------------------------------------------------------------ emergency stop

def emergency_text(report, out: IO[str], err: IO[str]) -> None:
    rows = [(a.kind, a.target, a.result, a.detail) for a in report.actions]
    out.write(table(rows, ["KIND", "TARGET", "RESULT", "DETAIL"]) + "\n" if rows else "nothing of the stack was running\n")
    if report.ok:
        out.write(f"\nemergency stop done in {report.seconds:.1f}s: nothing of the stack runs, its ports are free\n")
    else:
        err.write(f"\nemergency stop incomplete after {report.seconds:.1f}s: see the FAILED/BUSY rows; "
                  f"runbook: {report.runbook.path}\n")


def emergency_json(report, out: IO[str]) -> None:
    to_json("emergency-stop", {"ok": report.ok, "seconds": round(report.seconds, 3), "deadline": report.deadline,
                               "actions": [vars(a) for a in report.actions],
                               "runbook": None if report.ok else report.runbook.path}, out)


# ------------------------------------------------------------------------------------ doctor

def doctor_text(checks, out: IO[str]) -> None:
    rows = [(c.name, "required" if c.required else "optional", c.status.upper() if c.status in ("fail", "warn")
             else c.status, c.detail, c.runbook.path if c.runbook and c.status != "ok" else "")
            for c in checks]
    out.write(table(rows, ["CHECK", "NEED", "RESULT", "DETAIL", "RUNBOOK"]) + "\n")
    failed = [c.name for c in checks if c.required and c.status == "fail"]
    warned = [c.name for c in checks if c.status == "warn"]
    if failed:
        out.write(f"\nnot ready: {', '.join(failed)} failed (required); fix each with its runbook, then run "
                  f"`kitty-ops doctor` again (see {Runbook.DOCTOR.path})\n")
    else:
        out.write("\nready to start" + (f" (warnings: {', '.join(warned)})" if warned else "") + "\n")


def doctor_json(checks, out: IO[str]) -> None:
    failed = any(c.required and c.status == "fail" for c in checks)
    to_json("doctor", {"ok": not failed, "checks": [c.as_dict() for c in checks]}, out)
