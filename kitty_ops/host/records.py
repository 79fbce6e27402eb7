"""Runtime files of each started server, under the logs directory (default `.logs/`):

  llamacpp-<name>.log   server output, appended across restarts
  llamacpp-<name>.pid   the bare PID, for runbooks: `ps -p $(cat .logs/llamacpp-f16.pid)`
  llamacpp-<name>.json  the identity record: proof that a later command may signal that PID

Native services of the stack (the images API and worker) have the same three files under the
prefix `service-` (`.logs/service-images-api.pid`).

Both PID files are written atomically (temporary file, full fsync, rename) and 0600, since the
recorded command line may carry a secret passed through EXTRA_ARGS.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

from kitty_ops.host.platform import full_fsync
from kitty_ops.host.procs import Identity

RECORD_SCHEMA = 1
LLAMA = "llamacpp"  # file prefix of llama servers' runtime files
SERVICE = "service"  # file prefix of native services (the images API and worker)


@dataclasses.dataclass(frozen=True)
class EngineRecord:
    name: str
    pid: int
    create_time: float
    cmdline: list[str]  # as the kernel reported it just after spawn (for people)
    argv: list[str]  # as kitty-ops built it; argv[1:] is part of the identity proof
    port: int
    url: str
    model: str
    mmproj: str | None
    engine_version: str
    binary: str
    log: str
    log_offset: int  # where this run's output starts in the log
    started_at: float  # wall-clock seconds (time.time())
    prefix: str = LLAMA
    # What a llama server runs on, read from its log once it was healthy (kitty_ops.llama.offload:
    # backend, devices, layers offloaded); None before that, or for a record an older kitty-ops wrote.
    offload: dict | None = None

    @property
    def identity(self) -> Identity:
        return Identity(self.pid, self.create_time, tuple(self.argv[1:]))

    @property
    def flags(self) -> list[str]:
        return [t for t in self.argv[1:] if t.startswith("--")]

    def as_dict(self) -> dict:
        return {"schema": RECORD_SCHEMA, **dataclasses.asdict(self), "flags": self.flags}


def log_path(logs_dir: Path, name: str, prefix: str = LLAMA) -> Path:
    return logs_dir / f"{prefix}-{name}.log"


def pid_path(logs_dir: Path, name: str, prefix: str = LLAMA) -> Path:
    return logs_dir / f"{prefix}-{name}.pid"


def record_path(logs_dir: Path, name: str, prefix: str = LLAMA) -> Path:
    return logs_dir / f"{prefix}-{name}.json"


def write_atomic(path: Path, text: str | bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as handle:
            handle.write(text)
            handle.flush()
            full_fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save(logs_dir: Path, record: EngineRecord) -> None:
    # The record first: a bare PID file without a record is never trusted, the reverse is fine.
    write_atomic(record_path(logs_dir, record.name, record.prefix), json.dumps(record.as_dict(), indent=2) + "\n")
    write_atomic(pid_path(logs_dir, record.name, record.prefix), f"{record.pid}\n")


class BadRecord(Exception):
    pass


def load(logs_dir: Path, name: str, prefix: str = LLAMA) -> EngineRecord | None:
    """The record of `name`, None when there is none. Raises BadRecord when it is unreadable."""
    path = record_path(logs_dir, name, prefix)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BadRecord(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise BadRecord(f"{path}: not a JSON object")
    fields = {f.name for f in dataclasses.fields(EngineRecord)}
    try:
        return EngineRecord(**{k: v for k, v in data.items() if k in fields})
    except TypeError as exc:
        raise BadRecord(f"{path}: {exc}") from None


def bare_pid(logs_dir: Path, name: str, prefix: str = LLAMA) -> int | None:
    try:
        return int(pid_path(logs_dir, name, prefix).read_text().strip())
    except (OSError, ValueError):
        return None


def remove(logs_dir: Path, name: str, prefix: str = LLAMA) -> None:
    for path in (pid_path(logs_dir, name, prefix), record_path(logs_dir, name, prefix)):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def recorded_names(logs_dir: Path, prefix: str = LLAMA) -> list[str]:
    """Names with a record or a PID file, including servers no longer in the configuration."""
    names = set()
    for pattern in (f"{prefix}-*.json", f"{prefix}-*.pid"):
        for path in logs_dir.glob(pattern):
            names.add(path.stem[len(prefix) + 1:])
    return sorted(names)


def head(path: Path, offset: int = 0, max_bytes: int = 1024 * 1024) -> list[str]:
    """The lines of a log from `offset` on, reading at most `max_bytes` (a run's start: what it
    loaded and on which device). A line cut by the limit is left out."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(max_bytes)
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if len(data) >= max_bytes and not data.endswith(b"\n"):
        lines = lines[:-1]
    return lines


def tail(path: Path, lines: int = 20, offset: int = 0, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `lines` lines of a log from `offset` on, reading at most `max_bytes`."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(offset, size - max_bytes)
            handle.seek(start)
            data = handle.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    return text.splitlines()[-lines:] if lines > 0 else []
