"""The health report for the three readers it has: a monitoring system (one status line with
performance data, then the details), a program (versioned JSON) and Prometheus (a textfile-
collector file, written atomically so node_exporter never reads half of one); and `status`, the
same observation as the operator's table of the whole stack (status.py makes its rows)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from kitty_ops.exitcodes import Health as Level
from kitty_ops.formats import duration, size, table, to_json
from kitty_ops.health import judge
from kitty_ops.health.run import Report
from kitty_ops.health.status import Row, Status
from kitty_ops.host import records
from kitty_ops.llama import offload

PREFIX = "KITTY"


def status_line(report: Report) -> str:
    """`KITTY OK - 8/8 healthy | 'q4_latency'=0.012s;;2;0; ...`: the first line every
    monitoring plugin prints, and all that most of them keep."""
    perf = judge.perfdata(report.components, None, report.probe_timeout)
    perf += f"{' ' if perf else ''}'check_time'={report.seconds:.3f}s;;{report.deadline:g};0;"
    return f"{PREFIX} {report.level.name} - {report.summary} | {perf}"


def text(report: Report, out: IO[str]) -> None:
    out.write(status_line(report) + "\n")
    if report.components:
        rows = [(c.name, c.tier, c.level.name, c.status,
                 "-" if c.latency is None else f"{c.latency * 1000:.0f}ms", duration(c.uptime),
                 ", ".join(f"{n}={s}" for n, s in c.dependencies.items()) or "-", c.detail)
                for c in report.components]
        out.write(table(rows, ["NAME", "TIER", "LEVEL", "STATUS", "LATENCY", "UPTIME", "NEEDS", "DETAIL"]) + "\n")
    for c in report.components:
        if c.level is Level.OK:
            continue
        if c.log_tail:
            out.write(f"\n{c.name}: last lines of its log:\n")
            out.writelines(f"  {line}\n" for line in c.log_tail)
        if c.runbook:
            out.write(f"{c.name}: see {c.runbook.path}\n")


def json_report(report: Report, out: IO[str]) -> None:
    to_json("health", {
        "status": report.level.name,
        "exit_code": int(report.level),
        "summary": report.summary,
        "checked_at": datetime.fromtimestamp(report.checked_at, timezone.utc).isoformat(timespec="milliseconds"),
        "seconds": round(report.seconds, 4),
        "probe_timeout": report.probe_timeout,
        "deadline": report.deadline,
        "counts": dict(judge.counts(report.components)),
        "components": [c.as_dict() for c in report.components],
        "notes": report.notes,
    }, out)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus(report: Report) -> str:
    """The report in the Prometheus text exposition format (version 0.0.4)."""
    lines = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            number = "NaN" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))
            lines.append(f"{name}{{{rendered}}} {number}" if rendered else f"{name} {number}")

    def who(c: judge.Component) -> dict[str, str]:
        return {"component": c.name, "tier": c.tier}

    family("kitty_health_status", "gauge",
           "Worst state of the stack: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (monitoring-plugin codes).",
           [({}, int(report.level))])
    family("kitty_health_check_duration_seconds", "gauge", "How long the health check took.",
           [({}, report.seconds)])
    family("kitty_health_last_run_timestamp_seconds", "gauge", "When the health check ran (Unix time).",
           [({}, report.checked_at)])
    family("kitty_component_up", "gauge", "1 when the component is healthy, else 0.",
           [(who(c), 1 if c.level is Level.OK else 0) for c in report.components])
    family("kitty_component_status", "gauge",
           "State of the component: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
           [(who(c), int(c.level)) for c in report.components])
    family("kitty_component_probe_seconds", "gauge",
           "How long the component's health probe took (docker's own healthcheck for containers).",
           [(who(c), c.latency) for c in report.components if c.latency is not None])
    family("kitty_component_uptime_seconds", "gauge", "Seconds since the component's process or container started.",
           [(who(c), c.uptime) for c in report.components if c.uptime is not None])
    family("kitty_component_restarts", "gauge",
           "Restarts of the component by `kitty-ops supervise` (only supervised components).",
           [(who(c), c.restarts) for c in report.components if c.restarts is not None])
    family("kitty_component_failed", "gauge",
           "1 when the supervisor gave up on the component (crash loop), else 0.",
           [(who(c), 1 if c.supervisor_state == "failed" else 0) for c in report.components if c.supervised])
    return "\n".join(lines) + "\n"


def write_prometheus(path: Path, report: Report) -> None:
    """Temp file in the same directory, full fsync, rename: the collector sees the old file or the new
    one, never a partial one. Its temp name does not end in .prom, so it is never collected.
    0644: node_exporter usually runs as another user, and the file holds no secret."""
    records.write_atomic(path, prometheus(report), mode=0o644)


# ------------------------------------------------------------------------------------- status

STATUS_HEADERS = ["TIER", "NAME", "STATE", "HEALTH", "PID/CONTAINER", "PORTS", "UPTIME", "MEMORY",
                  "MODEL/IMAGE", "ENGINE", "OFFLOAD", "RESTARTS", "DETAIL"]
DETAIL_WIDTH = 100  # the table's last column; --json has all of it
NOT_FINE = ("down", "failed", "backoff", "exited", "restarting", "paused", "unknown")


def status_text(status: Status, out: IO[str]) -> None:
    """One table, one row per component; then, for each one that is down, its runbook."""
    out.write(table([_status_cells(r) for r in status.rows], STATUS_HEADERS) + "\n")
    for row in status.rows:
        if row.runbook and (row.state in NOT_FINE or row.health == "unhealthy"):
            out.write(f"{row.name}: see {row.runbook}\n")
    for note in status.notes:
        out.write(f"note: {note}\n")


def _status_cells(r: Row) -> list[object]:
    who = r.pid if r.pid is not None else (r.container[:12] if r.container else None)
    model = r.model.rsplit("/", 1)[-1] if r.model and r.tier != "compose" else r.model
    engine = r.engine.removeprefix("version: ") if r.engine else None
    restarts = None
    if r.supervised:
        restarts = f"{r.restarts}" + (f" (last: {r.last_exit})" if r.last_exit else "")
    detail = r.detail if len(r.detail) <= DETAIL_WIDTH else r.detail[:DETAIL_WIDTH - 1] + "…"
    found = offload.Offload.from_dict(r.offload)
    return [r.tier, r.name, r.state, r.health, who, ",".join(r.ports) or None,
            duration(r.uptime) if r.uptime is not None else None, size(r.memory_bytes) if r.memory_bytes else None,
            model, engine, found.describe() if found else None, restarts, detail or None]


def status_json(status: Status, out: IO[str]) -> None:
    to_json("status", {
        "checked_at": datetime.fromtimestamp(status.checked_at, timezone.utc).isoformat(timespec="milliseconds"),
        "seconds": round(status.seconds, 4),
        "components": [r.as_dict() for r in status.rows],
        "notes": status.notes,
    }, out)
