"""The compose model's outline, kept between runs, so that health, status, start and stop can
plan without loading the compose project first.

`docker compose config` costs 0.1-0.3 s of CLI start-up and project loading: more than all the
rest of a health check, and a third of what stands between `start` and its first container.
What planning needs of it (the services, their dependencies, whether they have a healthcheck,
their ports, labels and pull policy) changes only when its inputs do: the compose files,
the env file, the compose settings, and the environment variables the files interpolate. So the
outline is stored under a key made of those, and `docker compose config` runs again only when one
of them changed.

The outline holds no secret: resolved environment values are dropped, and the key is a hash.
What needs them (the postgres and RabbitMQ checks of `start`) waits for the full model, which
`start` resolves in the background meanwhile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable, Mapping

from kitty_ops.config import ComposeSettings
from kitty_ops.containers.compose import Port, ServiceModel, StackModel
from kitty_ops.host.records import write_atomic

SCHEMA = 2  # 2: pull_policy kept (start plans its pulls from the outline)
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def path(logs_dir: Path, all_profiles: bool = False) -> Path:
    """Where the outline is kept: one for the enabled profiles (start, health, status), one for
    every profile (stop), so that the two never evict each other."""
    return logs_dir / ("compose-outline-all.json" if all_profiles else "compose-outline.json")


def key(settings: ComposeSettings, environ: Mapping[str, str] | None = None,
        profiles: tuple[str, ...] | None = None) -> str | None:
    """A hash of everything the model depends on; None when an input cannot be read.
    `profiles`: the ones the model was resolved with (default: the settings' own)."""
    environ = os.environ if environ is None else environ
    parts: list[object] = [SCHEMA, settings.project, list(settings.profiles if profiles is None else profiles)]
    names: set[str] = set()
    for path in (*settings.files, settings.env_file):
        try:
            stat = path.stat()
            if path != settings.env_file:
                names |= set(_VARIABLE.findall(path.read_text(errors="replace")))
        except OSError:
            if path == settings.env_file:
                parts.append([str(path), None])
                continue
            return None
        parts.append([str(path), stat.st_mtime_ns, stat.st_size])
    parts.append(sorted((n, environ[n]) for n in names if n in environ))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def outline(model: StackModel) -> dict:
    return {"project": model.project, "services": {
        name: {"image": s.image, "depends_on": dict(s.depends_on), "has_healthcheck": s.has_healthcheck,
               "needs": list(s.needs), "ports": [dataclasses.asdict(p) for p in s.ports],
               "pull_policy": s.pull_policy}
        for name, s in model.services.items()}}


def from_outline(data: Mapping) -> StackModel:
    services = {name: ServiceModel(name, raw["image"], raw["depends_on"], raw["has_healthcheck"],
                                   tuple(raw["needs"]), tuple(Port(**p) for p in raw["ports"]),
                                   pull_policy=raw["pull_policy"])
                for name, raw in data["services"].items()}
    return StackModel(data["project"], services)


def stored(path: Path, settings: ComposeSettings, profiles: tuple[str, ...] | None = None) -> StackModel | None:
    """The outline stored at `path` when its key still matches what it was resolved from."""
    current = key(settings, profiles=profiles)
    if current is None:
        return None
    try:
        data = json.loads(path.read_text())
        return from_outline(data["model"]) if data.get("key") == current else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(path: Path, settings: ComposeSettings, model: StackModel, profiles: tuple[str, ...] | None = None) -> None:
    """Keep the outline of a freshly resolved model. A cache that cannot be written only costs
    the next run time."""
    current = key(settings, profiles=profiles)
    if current is not None:
        try:
            write_atomic(path, json.dumps({"key": current, "model": outline(model)}) + "\n")
        except OSError:
            pass


def cached_model(path: Path, settings: ComposeSettings, resolve: Callable[[], StackModel],
                 profiles: tuple[str, ...] | None = None) -> StackModel:
    """The outline stored at `path` when its key still matches, else `resolve()` (which may
    raise), stored for next time."""
    found = stored(path, settings, profiles)
    if found is None:
        found = resolve()
        store(path, settings, found, profiles)
    return found
