"""Renderers: results -> text for people or versioned JSON for machines. No logic, no I/O
beyond the stream they are handed."""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Iterable, Sequence

from kitty_ops.lifecycle import Result
from kitty_ops.problems import Problem
from kitty_ops.status import ServerStatus
from kitty_ops.validate import Report

SCHEMA = "kitty-ops/{}/v1"


def to_json(kind: str, payload: dict, out: IO[str]) -> None:
    out.write(json.dumps({"schema": SCHEMA.format(kind), **payload}, indent=2, default=str) + "\n")


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def problems_text(problems: Iterable[Problem]) -> str:
    lines = []
    for p in problems:
        lines.append(f"{p.severity.value.upper():7} {p.subject}: {p.message}")
        lines.append(f"        fix: {p.fix}")
        lines.append(f"        runbook: {p.runbook.path}")
    return "\n".join(lines)


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


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
        rows = [(o.name, o.action.value, o.pid, o.url or "-", f"{o.seconds:.1f}s", o.detail)
                for o in result.outcomes]
        out.write(table(rows, ["NAME", "RESULT", "PID", "URL", "TIME", "DETAIL"]) + "\n")
    for o in result.outcomes:
        for note in o.notes:
            err.write(f"note: {o.name}: {note}\n")
        if o.ok or o.action.value == "rolled-back":
            continue
        err.write(f"\n{o.name} {o.action.value}: {o.detail}\n")
        if o.log_tail:
            err.write(f"  last lines of its log:\n")
            err.writelines(f"    {line}\n" for line in o.log_tail)
        if o.runbook:
            err.write(f"  runbook: {o.runbook.path}\n")
    if result.operation == "start" and result.exit == 0 and result.outcomes:
        err.write("\nall servers healthy. Stop with ./ops/scripts/stop-all.sh; watch with "
                  "`kitty-ops status` and `kitty-ops logs NAME -f`.\n")


def result_json(result: Result, out: IO[str]) -> None:
    to_json(result.operation, {
        "ok": result.exit == 0,
        "exit_code": int(result.exit),
        "servers": [o.as_dict() for o in result.outcomes],
        "problems": [p.as_dict() for p in result.problems],
    }, out)


class LineProgress:
    """Progress while waiting: one plain line per event on stderr, with elapsed time, so it reads
    the same on a terminal, in a log file and in cron mail."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        self.started = time.monotonic()

    def event(self, name: str, message: str) -> None:
        self.stream.write(f"[{time.monotonic() - self.started:6.1f}s] {name:<10} {message}\n")
        self.stream.flush()


# ------------------------------------------------------------------------------------------ status

def status_text(servers: list[ServerStatus], out: IO[str]) -> None:
    rows = [(s.name, s.state.value, s.pid, s.port, duration(s.uptime_s), size(s.rss_bytes),
             (s.model or "-").rsplit("/", 1)[-1], s.engine_version or "-", s.detail)
            for s in servers]
    out.write(table(rows, ["NAME", "STATE", "PID", "PORT", "UPTIME", "RSS", "MODEL", "ENGINE", "DETAIL"]) + "\n")


def status_json(servers: list[ServerStatus], out: IO[str]) -> None:
    to_json("status", {"servers": [s.as_dict() for s in servers]}, out)
