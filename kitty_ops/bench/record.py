"""Saved bench runs and the comparison with the last comparable one.

Every run of a role is kept as one JSON file under `.logs/bench/` (`<role>-<UTC time>.json`,
written atomically, 0600) with everything that explains its numbers: the engine's version and
build, the model file's name, size and a hash of its first 8 MiB (not the whole file: a 40 GB
model would take minutes), the server's flags, threads, context and slots, the host, kitty-ops's
version and the bench's options, beside the figures of each level and its memory samples.

A new run is compared with the newest earlier record that is comparable: the same role, model
(size and hash), bench options (prompt and output length, requests, seed) and at least one
concurrency level in common. A figure that got worse by more than the threshold is a
regression: per-request generation tokens/s (median) going down, or the time to first token
(median) going up, the latter only by more than TTFT_FLOOR too (a few milliseconds of a fast
TTFT are noise, not a regression). What changed in between (engine, flags, offload, host) is
said beside it. `compare` is pure.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from pathlib import Path

from kitty_ops.host.records import write_atomic
from kitty_ops.llama.command import is_number

RECORD_SCHEMA = "kitty-ops/bench-record/v1"
HASH_BYTES = 8 * 1024 * 1024
TTFT_FLOOR = 0.010  # seconds: a TTFT change smaller than this is never a regression
OPTION_KEYS = ("prompt_tokens", "max_tokens", "requests", "seed")


def bench_dir(logs_dir: Path) -> Path:
    return logs_dir / "bench"


def model_identity(path: Path, hash_bytes: int = HASH_BYTES) -> dict:
    """The model file's name, size and `sha256:<first 16 hex digits>` of its first bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        remaining = hash_bytes
        while remaining > 0:
            chunk = handle.read(min(remaining, 1024 * 1024))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return {"file": path.name, "bytes": path.stat().st_size,
            "hash": f"sha256:{digest.hexdigest()[:16]}", "hashed_bytes": min(hash_bytes, path.stat().st_size)}


def save(logs_dir: Path, record: dict) -> Path:
    """Write `record` as a new file under .logs/bench/ and return its path."""
    directory = bench_dir(logs_dir)
    stamp = datetime.datetime.fromtimestamp(record["created_ts"], datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{record['role']}-{stamp}.json"
    n = 2
    while path.exists():
        path = directory / f"{record['role']}-{stamp}-{n}.json"
        n += 1
    write_atomic(path, json.dumps(record, indent=1, default=str) + "\n")
    return path


def load_all(logs_dir: Path, role: str) -> list[tuple[Path, dict]]:
    """The records of `role`, oldest first; unreadable files are passed over."""
    found = []
    for path in bench_dir(logs_dir).glob(f"{role}-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("schema") == RECORD_SCHEMA and data.get("role") == role:
            found.append((path, data))
    return sorted(found, key=lambda item: item[1].get("created_ts", 0))


def comparable_key(record: dict) -> tuple:
    model = record.get("model") or {}
    options = record.get("options") or {}
    return (record.get("role"), model.get("hash"), model.get("bytes"), *(options.get(k) for k in OPTION_KEYS))


def levels_of(record: dict) -> dict[int, dict]:
    return {level["concurrency"]: level for level in record.get("levels", []) if level.get("completed")}


def last_comparable(history: list[tuple[Path, dict]], new: dict) -> tuple[Path, dict] | None:
    """The newest complete record in `history` comparable with `new`."""
    key, mine = comparable_key(new), set(levels_of(new))
    for path, old in reversed(history):
        if old.get("complete") and comparable_key(old) == key and mine & set(levels_of(old)):
            return path, old
    return None


# (key in a level, label, unit, higher is better, a regression fails the run)
FIGURES = (
    ("gen_tps_p50", "generation tokens/s", "tok/s", True, True),
    ("ttft_p50", "time to first token", "s", False, True),
    ("aggregate_tps", "aggregate tokens/s", "tok/s", True, False),
)


@dataclasses.dataclass(frozen=True)
class Change:
    concurrency: int
    figure: str  # the level's key
    label: str
    unit: str
    old: float
    new: float
    worse_pct: float  # > 0: worse by this many percent; < 0: better
    regression: bool

    def describe(self, role: str) -> str:
        fmt = (lambda v: f"{v * 1000:.1f} ms") if self.unit == "s" else (lambda v: f"{v:.2f} tok/s")
        word = "worse" if self.worse_pct > 0 else "better"
        return (f"{role} at concurrency {self.concurrency}: {self.label} {fmt(self.old)} -> {fmt(self.new)} "
                f"({abs(self.worse_pct):.1f}% {word})")

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "old": round(self.old, 4), "new": round(self.new, 4),
                "worse_pct": round(self.worse_pct, 2)}


@dataclasses.dataclass(frozen=True)
class Comparison:
    against: str  # the old record's path
    against_created_at: str
    threshold: float  # percent
    changes: tuple[Change, ...]
    differences: tuple[str, ...]  # what else changed between the two runs

    @property
    def regressions(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.regression)

    def as_dict(self) -> dict:
        return {"against": self.against, "against_created_at": self.against_created_at, "threshold": self.threshold,
                "regressions": len(self.regressions), "changes": [c.as_dict() for c in self.changes],
                "differences": list(self.differences)}


def compare(old: dict, new: dict, threshold: float, against: str = "") -> Comparison:
    """The figures of every level the two runs share, old against new; `threshold` in percent."""
    changes = []
    old_levels, new_levels = levels_of(old), levels_of(new)
    for concurrency in sorted(set(old_levels) & set(new_levels)):
        before, after = old_levels[concurrency], new_levels[concurrency]
        for key, label, unit, higher_better, gated in FIGURES:
            a, b = before.get(key), after.get(key)
            if not a or b is None or a <= 0:
                continue
            worse = (a - b) / a * 100 if higher_better else (b - a) / a * 100
            regression = gated and worse > threshold and (unit != "s" or b - a > TTFT_FLOOR)
            changes.append(Change(concurrency, key, label, unit, float(a), float(b), worse, regression))
    return Comparison(against, str(old.get("created_at", "")), threshold, tuple(changes), tuple(differences(old, new)))


def differences(old: dict, new: dict) -> list[str]:
    """What changed between two runs besides the figures: engine, server flags, host."""
    found = []
    pairs = (("engine", ("engine", "version")), ("server flags", ("server", "flags")),
             ("threads", ("server", "threads")), ("slots", ("server", "total_slots")),
             ("offload", ("server", "offload")), ("devices", ("server", "devices")),
             ("kitty-ops", ("kitty_ops",)), ("host", ("host", "machine")), ("CPUs", ("host", "cpu_count")))
    for label, path in pairs:
        a, b = _get(old, path), _get(new, path)
        if a != b:
            if isinstance(a, list) and isinstance(b, list):
                gone = [x for x in a if x not in b]
                added = [x for x in b if x not in a]
                a, b = " ".join(map(str, gone)) or "-", " ".join(map(str, added)) or "-"
            found.append(f"{label}: {a} -> {b}")
    return found


def _get(data: dict, path: tuple[str, ...]):
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


# Flags that say where, not how fast: left out of the flags a record compares.
PLACE_FLAGS = {"--model", "--mmproj", "--host", "--port", "--alias", "--log-file"}


def flag_pairs(argv: list[str]) -> list[str]:
    """A server's arguments (without the binary) as "flag value" strings ("--threads 4",
    "--metrics"), without the ones that only say where (model path, host, port)."""
    pairs, i = [], 0
    while i < len(argv):
        token = argv[i]
        following = argv[i + 1] if i + 1 < len(argv) else None
        takes_value = following is not None and (not following.startswith("-") or is_number(following))
        if token.startswith("-") and not is_number(token):
            if token not in PLACE_FLAGS:
                pairs.append(f"{token} {following}" if takes_value else token)
            i += 2 if takes_value else 1
        else:
            i += 1
    return pairs


def flag_value(argv: list[str], flag: str) -> str | None:
    for i, token in enumerate(argv[:-1]):
        if token == flag:
            return argv[i + 1]
    return None


def host_facts() -> dict:
    import platform  # noqa: PLC0415
    return {"platform": platform.platform(), "system": platform.system(), "machine": platform.machine(),
            "processor": platform.processor(), "cpu_count": os.cpu_count(), "python": platform.python_version()}
