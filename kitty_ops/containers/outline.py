"""What the health check needs of the compose model, kept between runs.

`docker compose config` costs 0.1-0.3 s of CLI start-up and project loading: more than all the
rest of a health check. What health needs of it (the services, their dependencies, whether they
have a healthcheck, their ports and labels) changes only when its inputs do: the compose files,
the env file, the compose settings, and the environment variables the files interpolate. So the
outline is stored under a key made of those, and `docker compose config` runs again only when one
of them changed.

The outline holds no secret: resolved environment values are dropped, and the key is a hash.
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

SCHEMA = 1
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def key(settings: ComposeSettings, environ: Mapping[str, str] | None = None) -> str | None:
    """A hash of everything the model depends on; None when an input cannot be read."""
    environ = os.environ if environ is None else environ
    parts: list[object] = [SCHEMA, settings.project, list(settings.profiles)]
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
               "needs": list(s.needs), "ports": [dataclasses.asdict(p) for p in s.ports]}
        for name, s in model.services.items()}}


def from_outline(data: Mapping) -> StackModel:
    services = {name: ServiceModel(name, raw["image"], raw["depends_on"], raw["has_healthcheck"],
                                   tuple(raw["needs"]), tuple(Port(**p) for p in raw["ports"]))
                for name, raw in data["services"].items()}
    return StackModel(data["project"], services)


def cached_model(path: Path, settings: ComposeSettings, resolve: Callable[[], StackModel]) -> StackModel:
    """The outline stored at `path` when its key still matches, else `resolve()` (which may
    raise), stored for next time. A cache that cannot be written only costs the next run time."""
    current = key(settings)
    if current is not None:
        try:
            stored = json.loads(path.read_text())
            if stored.get("key") == current:
                return from_outline(stored["model"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    model = resolve()
    if current is not None:
        try:
            write_atomic(path, json.dumps({"key": current, "model": outline(model)}) + "\n")
        except OSError:
            pass
    return model
