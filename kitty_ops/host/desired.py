"""The operator's intent: which components should be up, in `.logs/desired.json`.

`start` writes "up" for what it started (or found running), `stop` and `emergency-stop` write
"down" for what they take down (before they take it down, so that a supervisor that sees the
process die already reads "down"), `restart` writes "up" again. The supervisor only reads it:
it keeps up what is "up" and never brings back what is "down" or not mentioned.

Components are named as graph nodes: `llama:q4`, `native:images-api`, `compose:postgres`.
The file is written atomically (temporary file, fsync, rename), 0600, by callers that hold the
project lock (emergency-stop takes it when it is free and writes anyway when not: an atomic
rename never leaves a torn file). Each entry says who wrote it and when, so a supervisor can tell
that the operator asked again (`restart` after a crash loop) from the answer it already acted on.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Iterable, Mapping

from kitty_ops.host.records import write_atomic

SCHEMA = 1
UP = "up"
DOWN = "down"


@dataclasses.dataclass(frozen=True)
class Intent:
    want: str  # up | down
    by: str  # start | stop | emergency-stop | restart | supervise
    at: float  # wall clock (time.time()) of the write

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def path(logs_dir: Path) -> Path:
    return logs_dir / "desired.json"


def load(logs_dir: Path) -> dict[str, Intent]:
    """The recorded intent per component; {} when there is none or it cannot be read (an
    unreadable file means "no intent known": the supervisor then restarts nothing)."""
    try:
        data = json.loads(path(logs_dir).read_text())
    except (OSError, ValueError):
        return {}
    found = {}
    for key, entry in (data.get("components") or {}).items() if isinstance(data, dict) else ():
        try:
            if entry["want"] in (UP, DOWN):
                found[str(key)] = Intent(entry["want"], str(entry.get("by", "")), float(entry.get("at", 0)))
        except (KeyError, TypeError, ValueError):
            continue
    return found


def merged(current: Mapping[str, Intent], ids: Iterable[str], want: str, by: str,
           now: float) -> dict[str, Intent]:
    """Pure: `current` with `ids` set to `want`."""
    if want not in (UP, DOWN):
        raise ValueError(f"want must be {UP!r} or {DOWN!r}, not {want!r}")
    result = dict(current)
    for node_id in ids:
        result[node_id] = Intent(want, by, now)
    return result


def render(intents: Mapping[str, Intent]) -> str:
    body = {"schema": SCHEMA, "components": {k: intents[k].as_dict() for k in sorted(intents)}}
    return json.dumps(body, indent=2) + "\n"


def mark(logs_dir: Path, ids: Iterable[str], want: str, by: str, now: float | None = None) -> None:
    """Record `want` for `ids` (the caller holds the project lock)."""
    ids = list(ids)
    if not ids:
        return
    intents = merged(load(logs_dir), ids, want, by, time.time() if now is None else now)
    write_atomic(path(logs_dir), render(intents))


def wanted_up(intents: Mapping[str, Intent]) -> set[str]:
    return {k for k, v in intents.items() if v.want == UP}
