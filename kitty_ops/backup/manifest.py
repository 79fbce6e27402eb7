"""A backup on disk: its directory, its manifest, its names. No Docker, no network.

A backup is one directory `<backups>/<UTC timestamp>` holding the artifacts and `manifest.json`
(what, when, sizes, the sha256 of every file, the tool versions). It is written as
`<backups>/.<name>.partial` and renamed only once complete, so a directory with a plain
timestamp name and a manifest is a complete backup, and nothing else is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterable

from kitty_ops.host.platform import full_fsync

SCHEMA = "kitty-ops/backup/v1"
MANIFEST = "manifest.json"
NAME_RE = re.compile(r"^\d{8}T\d{6}Z(-[a-z0-9-]+)?$")
PARTIAL_SUFFIX = ".partial"
CHUNK = 1024 * 1024


class BadBackup(Exception):
    """The backup cannot be used: missing, incomplete, tampered with or damaged."""


def new_name(now: datetime, taken: Iterable[str], label: str = "") -> str:
    base = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + (f"-{label}" if label else "")
    taken = set(taken)
    name, n = base, 1
    while name in taken or f".{name}{PARTIAL_SUFFIX}" in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class HashingWriter:
    """A binary file written once, hashed while written (no second read of a large dump)."""

    def __init__(self, path: Path):
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.handle: IO[bytes] = os.fdopen(fd, "wb")
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def close(self) -> tuple[str, int]:
        self.handle.flush()
        full_fsync(self.handle.fileno())
        self.handle.close()
        return self.digest.hexdigest(), self.size


def member(root: Path, relative: str) -> Path:
    """`relative` inside `root`, refusing absolute paths, `..` and links out: a manifest is
    never trusted to say where to read or write."""
    if not relative or relative.startswith(("/", "\\")) or ".." in Path(relative).parts:
        raise BadBackup(f"manifest names a path outside the backup: {relative!r}")
    path = root / relative
    if path.is_symlink() or not path.resolve().is_relative_to(root.resolve()):
        raise BadBackup(f"manifest path {relative!r} leaves the backup directory")
    return path


def load(root: Path) -> dict:
    try:
        data = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise BadBackup(f"{root}: no {MANIFEST} (not a backup, or an incomplete one)") from None
    except (OSError, ValueError) as exc:
        raise BadBackup(f"{root / MANIFEST}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("files"), list):
        raise BadBackup(f"{root / MANIFEST}: not a {SCHEMA} manifest")
    return data


def check_hashes(root: Path, manifest: dict) -> list[str]:
    """Every file the manifest lists, re-hashed; a list of what does not match (empty: all do)."""
    problems = []
    listed = set()
    for entry in manifest["files"]:
        try:
            path = member(root, str(entry.get("path", "")))
        except BadBackup as exc:
            problems.append(str(exc))
            continue
        listed.add(path.name if path.parent == root else str(path.relative_to(root)))
        if not path.is_file():
            problems.append(f"{entry['path']}: missing")
            continue
        digest, size = sha256_file(path)
        if size != entry.get("size"):
            problems.append(f"{entry['path']}: {size} bytes, the manifest says {entry.get('size')}")
        elif digest != entry.get("sha256"):
            problems.append(f"{entry['path']}: sha256 {digest[:12]}…, the manifest says {str(entry.get('sha256'))[:12]}…")
    return problems


@dataclasses.dataclass(frozen=True)
class BackupInfo:
    name: str
    path: Path
    complete: bool
    created_at: str = ""
    size: int = 0
    parts: tuple[str, ...] = ()
    detail: str = ""


def list_backups(root: Path) -> list[BackupInfo]:
    """Complete backups (oldest first), then leftovers of interrupted ones."""
    found: list[BackupInfo] = []
    if not root.is_dir():
        return found
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.is_symlink():
            continue
        if path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX):
            found.append(BackupInfo(path.name, path, False, detail="incomplete: interrupted or still being written"))
            continue
        if not NAME_RE.match(path.name):
            continue
        try:
            manifest = load(path)
        except BadBackup as exc:
            found.append(BackupInfo(path.name, path, False, detail=str(exc)))
            continue
        found.append(BackupInfo(path.name, path, True, str(manifest.get("created_at", "")),
                                sum(int(f.get("size") or 0) for f in manifest["files"]),
                                tuple(manifest.get("parts", ()))))
    found.sort(key=lambda b: (not b.complete, b.created_at or b.name, b.name))
    return found


def plan_prune(backups: list[BackupInfo], keep: int) -> list[BackupInfo]:
    """The complete backups to delete so that `keep` remain: the oldest. Incomplete ones are
    never touched (one may be a backup running right now); keep <= 0 keeps everything."""
    complete = sorted((b for b in backups if b.complete), key=lambda b: (b.created_at, b.name))
    if keep <= 0 or len(complete) <= keep:
        return []
    return complete[:len(complete) - keep]
