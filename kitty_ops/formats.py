"""How values are written for people and machines: aligned tables, sizes, durations, and the
versioned JSON envelope every `--json` output shares. Pure, and the lowest layer, so every
capability's renderer can use the same words."""

from __future__ import annotations

import json
from typing import IO, Sequence

SCHEMA = "kitty-ops/{}/v{}"
# v2 of start/stop: the whole stack, so "servers" became "components" (each with its "component"
# tier), plus "plan", "checks" and "notes". v2 of status: the whole stack too, "servers" became
# "components" (each with its "tier", "state" and "health"), plus "checked_at", "seconds", "notes".
VERSIONS = {"start": 2, "stop": 2, "status": 2}


def to_json(kind: str, payload: dict, out: IO[str]) -> None:
    schema = SCHEMA.format(kind, VERSIONS.get(kind, 1))
    out.write(json.dumps({"schema": schema, **payload}, indent=2, default=str) + "\n")


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
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
