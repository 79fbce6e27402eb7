"""`kitty-ops backup | verify-backup | list-backups | restore`: the stack's state, kept safe.

A backup is written under a temporary name and renamed only when every part is on disk, checked
and listed in the manifest, so a failed or interrupted backup never looks complete. A restore
checks the backup first, takes a safety backup of the current state, stops the writers, restores
each part, and starts the stack again. Backup and restore hold the project lock, so no start or
stop runs in between.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from kitty_ops import __version__
from kitty_ops.backup.manifest import (
    MANIFEST,
    PARTIAL_SUFFIX,
    SCHEMA,
    BackupInfo,
    BadBackup,
    check_hashes,
    list_backups,
    load,
    member,
    new_name,
    plan_prune,
)
from kitty_ops.backup.parts import (
    ENV_FILE,
    POSTGRES_FILE,
    REDIS_FILE,
    EnvFile,
    Objects,
    PartFailed,
    Postgres,
    Redis,
    Unchecked,
)
from kitty_ops.config import Settings
from kitty_ops.containers.compose import Compose, ComposeError
from kitty_ops.exitcodes import Health
from kitty_ops.formats import size as human
from kitty_ops.health import run as health_run
from kitty_ops.host import lock
from kitty_ops.host.platform import full_fsync
from kitty_ops.host.records import write_atomic
from kitty_ops.outcomes import Progress, Silent
from kitty_ops.runbooks import Runbook
from kitty_ops.stack import run as stack

# What a restore writes into (either object store); everything else is a writer.
DATA_SERVICES = ("postgres", "redis", "rustfs", "minio")


@dataclasses.dataclass
class Step:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0


@dataclasses.dataclass
class Outcome:
    """What a backup, verify or restore did, for the renderers."""

    operation: str
    ok: bool
    path: Path | None = None
    steps: list[Step] = dataclasses.field(default_factory=list)
    error: str = ""
    runbook: Runbook | None = None
    pruned: list[str] = dataclasses.field(default_factory=list)
    safety: Path | None = None
    seconds: float = 0.0


def _parts(settings: Settings, compose: Compose | None) -> list:
    wanted = settings.backup.parts
    needs_compose = [p for p in ("postgres", "redis") if p in wanted
                     and not (p == "postgres" and settings.backup.database_url)]
    if needs_compose and compose is None:
        raise PartFailed(needs_compose[0], "the container tier is disabled (KITTY_COMPOSE_ENABLED=false); "
                                           "set KITTY_BACKUP_PARTS to what can be backed up", Runbook.CONFIGURATION)
    makers = {"postgres": lambda: Postgres(settings, compose), "redis": lambda: Redis(settings, compose),
              "objects": lambda: Objects(settings), "env": lambda: EnvFile(settings)}
    return [makers[name]() for name in ("postgres", "redis", "objects", "env") if name in wanted]


def _compose(settings: Settings) -> Compose | None:
    return Compose(settings.compose) if settings.compose_enabled else None


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        full_fsync(fd)
    finally:
        os.close(fd)


def _tools() -> dict[str, str]:
    def version(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
            return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "unavailable"
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return "unavailable"

    return {"kitty-ops": __version__, "python": platform.python_version(),
            "docker": version(["docker", "version", "--format", "{{.Client.Version}}"]),
            "docker compose": version(["docker", "compose", "version", "--short"])}


# ------------------------------------------------------------------------------------ backup

def backup(settings: Settings, label: str = "", keep: int | None = None, progress: Progress = Silent()) -> Outcome:
    """Raises lock.LockBusy."""
    with lock.held(lock.project_lock(settings.logs_dir), settings.lock_timeout, "backup"):
        return _backup(settings, label, settings.backup.keep if keep is None else keep, progress)


def _backup(settings: Settings, label: str, keep: int, progress: Progress) -> Outcome:
    began = time.monotonic()
    root = settings.backup.dir
    _private_dir(root)
    created = datetime.now(timezone.utc)
    name = new_name(created, os.listdir(root), label)
    partial = root / f".{name}{PARTIAL_SUFFIX}"
    partial.mkdir(mode=0o700)
    outcome = Outcome("backup", False)
    manifest: dict = {"schema": SCHEMA, "name": name, "created_at": created.isoformat(timespec="seconds"),
                      "host": socket.gethostname(), "compose_project": settings.compose.project,
                      "parts": [], "files": [], "tools": _tools()}
    try:
        for part in _parts(settings, _compose(settings)):
            started = time.monotonic()
            progress.event(part.name, "backing up")
            dumped = part.dump(partial)
            manifest["files"] += dumped.files
            manifest[part.name] = dumped.info
            manifest["parts"].append(part.name)
            size = sum(f["size"] for f in dumped.files)
            outcome.steps.append(Step(part.name, True, _describe(part.name, dumped.info, size),
                                      time.monotonic() - started))
            progress.event(part.name, outcome.steps[-1].detail)
        manifest["seconds"] = round(time.monotonic() - began, 3)
        write_atomic(partial / MANIFEST, json.dumps(manifest, indent=2) + "\n", mode=0o600)
        _fsync_dir(partial)
        final = root / name
        os.rename(partial, final)  # the moment it becomes a backup
        _fsync_dir(root)
    except PartFailed as exc:
        shutil.rmtree(partial, ignore_errors=True)
        outcome.steps.append(Step(exc.part, False, str(exc)))
        outcome.error, outcome.runbook = f"backup failed, nothing kept: {exc}", exc.runbook
        outcome.seconds = time.monotonic() - began
        return outcome
    except (ComposeError, OSError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        outcome.error = f"backup failed, nothing kept: {exc}"
        outcome.runbook = exc.problem.runbook if isinstance(exc, ComposeError) else Runbook.BACKUP
        outcome.seconds = time.monotonic() - began
        return outcome
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    outcome.ok, outcome.path = True, final
    outcome.pruned = prune(root, keep, final)
    outcome.seconds = time.monotonic() - began
    return outcome


def _describe(part: str, info: dict, size: int) -> str:
    if part == "postgres":
        return f"{info['database']}: {info['toc_entries']} archive entries, {human(size)}"
    if part == "redis":
        return f"{info['keys']} keys, {human(size)}"
    if part == "objects":
        return f"{len(info['objects'])} objects in {len(info['buckets'])} buckets, {human(size)}"
    return f"{info.get('source', '')}, {human(size)}"


def prune(root: Path, keep: int, newest: Path | None = None) -> list[str]:
    """The oldest complete backups beyond `keep`; never an incomplete one, never `newest`."""
    removed = []
    for old in plan_prune(list_backups(root), keep):
        if newest is not None and old.path == newest:
            continue
        shutil.rmtree(old.path)
        removed.append(old.name)
    return removed


# ------------------------------------------------------------------------------------ verify

def resolve(settings: Settings, target: str | None) -> Path:
    """A backup by name (under the backup directory), by path, or the newest complete one."""
    root = settings.backup.dir
    if not target:
        complete = [b for b in list_backups(root) if b.complete]
        if not complete:
            raise BadBackup(f"no complete backup in {root} (KITTY_BACKUP_DIR)")
        return complete[-1].path
    path = Path(target).expanduser()
    if not path.is_absolute() and not path.exists():
        path = root / target
    if not path.is_dir():
        raise BadBackup(f"no backup at {path}")
    return path.resolve()


def verify(settings: Settings, target: str | None) -> Outcome:
    began = time.monotonic()
    outcome = Outcome("verify-backup", False)
    try:
        path = resolve(settings, target)
        outcome.path = path
        manifest = load(path)
    except BadBackup as exc:
        outcome.error, outcome.runbook = str(exc), Runbook.BACKUP
        return outcome
    problems = check_hashes(path, manifest)
    outcome.steps.append(Step("sha256", not problems,
                              f"{len(manifest['files'])} files match the manifest" if not problems
                              else "; ".join(problems[:5])))
    if not problems:
        outcome.steps += _formats(settings, path, manifest)
    outcome.ok = all(s.ok for s in outcome.steps)
    if not outcome.ok:
        outcome.error = f"{path} fails verification: " + "; ".join(s.detail for s in outcome.steps if not s.ok)
        outcome.runbook = Runbook.BACKUP
    outcome.seconds = time.monotonic() - began
    return outcome


def _formats(settings: Settings, path: Path, manifest: dict) -> list[Step]:
    """Each artifact read by its own tool: pg_restore --list, redis-check-rdb."""
    steps = []
    compose = _compose(settings)
    for part in manifest.get("parts", []):
        try:
            if part == "postgres":
                entries = Postgres(settings, compose).toc_entries(member(path, POSTGRES_FILE))
                expected = manifest["postgres"]["toc_entries"]
                ok = entries == expected
                steps.append(Step(part, ok, f"pg_restore --list: {entries} entries"
                                  + ("" if ok else f", the manifest says {expected}")))
            elif part == "redis":
                steps.append(Step(part, True, "redis-check-rdb: " + Redis(settings, compose).check(member(path, REDIS_FILE))))
            elif part == "objects":
                objects = manifest["objects"]["objects"]
                bad = [o["key"] for o in objects if not o["file"].endswith(o["sha256"])]
                steps.append(Step(part, not bad, f"{len(objects)} objects" if not bad else f"mismatched: {bad[:3]}"))
            elif part == "env":
                steps.append(Step(part, member(path, ENV_FILE).is_file(), "env file present"))
        except Unchecked as exc:
            steps.append(Step(part, True, f"header only: {exc}"))
        except (PartFailed, BadBackup, KeyError, TypeError) as exc:
            steps.append(Step(part, False, str(exc)))
    return steps


# ----------------------------------------------------------------------------------- restore

def restore(settings: Settings, target: str | None, progress: Progress = Silent()) -> Outcome:
    """Raises lock.LockBusy. The caller has the operator's yes."""
    began = time.monotonic()
    checked = verify(settings, target)
    if not checked.ok:
        checked.operation = "restore"
        checked.error = f"refusing to restore: {checked.error}"
        return checked
    path = checked.path
    manifest = load(path)
    outcome = Outcome("restore", False, path, [Step("verify", True, "hashes and formats checked")])
    with lock.held(lock.project_lock(settings.logs_dir), settings.lock_timeout, "restore"):
        progress.event("restore", "safety backup of the current state")
        safety = _backup(settings, "pre-restore", 0, progress)
        if not safety.ok:
            outcome.error = f"refusing to restore: the safety backup of the current state failed: {safety.error}"
            outcome.runbook = safety.runbook
            return outcome
        outcome.safety = safety.path
        outcome.steps.append(Step("safety backup", True, str(safety.path), safety.seconds))
        writers = _writers(settings)
        if writers:
            progress.event("restore", f"stopping the writers: {', '.join(writers)}")
            stopped = stack.stop(settings, stack.Selection(only=tuple(writers)), progress)
            outcome.steps.append(Step("stop writers", stopped.exit == 0, ", ".join(writers)))
        try:
            _restore_parts(settings, path, manifest, outcome, progress)
        finally:
            progress.event("restore", "starting the stack again")
            started = stack.start(settings, [], stack.Selection(), progress)
            outcome.steps.append(Step("start", started.exit == 0,
                                      "stack started and checked" if started.exit == 0
                                      else f"start-all exited {int(started.exit)}: see kitty-ops health"))
            checked = health_run.run(settings, settings.probe_timeout, settings.health_deadline)
            outcome.steps.append(Step("health", checked.level is Health.OK, f"{checked.level.name}: {checked.summary}",
                                      checked.seconds))
    outcome.ok = all(s.ok for s in outcome.steps)
    if not outcome.ok and not outcome.error:
        failed = next(s for s in outcome.steps if not s.ok)
        outcome.error, outcome.runbook = f"{failed.name}: {failed.detail}", Runbook.BACKUP
    outcome.seconds = time.monotonic() - began
    return outcome


def _writers(settings: Settings) -> list[str]:
    """Everything that writes into the data services: app containers and native services."""
    names = [s.name for s in settings.images.services] if settings.images.enabled else []
    compose = _compose(settings)
    if compose is not None:
        running = compose.container_ids()
        names += [n for n in sorted(running) if n not in DATA_SERVICES and n != "mosquitto"]
    return names


def _restore_parts(settings: Settings, path: Path, manifest: dict, outcome: Outcome, progress: Progress) -> None:
    compose = _compose(settings)
    for part in manifest["parts"]:
        if part not in settings.backup.parts:
            outcome.steps.append(Step(part, True, "not restored: not in KITTY_BACKUP_PARTS"))
            continue
        started = time.monotonic()
        progress.event(part, "restoring")
        try:
            if part == "postgres":
                detail = Postgres(settings, compose).restore(member(path, POSTGRES_FILE))
            elif part == "redis":
                detail = Redis(settings, compose).restore(member(path, REDIS_FILE), manifest["redis"].get("keys"))
            elif part == "objects":
                detail = Objects(settings).restore(path, manifest["objects"])
            else:
                detail = EnvFile(settings).restore(member(path, ENV_FILE))
        except (PartFailed, BadBackup, ComposeError) as exc:
            outcome.steps.append(Step(part, False, str(exc), time.monotonic() - started))
            outcome.error = (f"restore of {part} failed: {exc}. The state before the restore is in the safety "
                             f"backup: kitty-ops restore {outcome.safety} --yes")
            outcome.runbook = getattr(exc, "runbook", Runbook.BACKUP)
            return
        outcome.steps.append(Step(part, True, detail, time.monotonic() - started))
        progress.event(part, detail)


def backups(settings: Settings) -> list[BackupInfo]:
    return list_backups(settings.backup.dir)
