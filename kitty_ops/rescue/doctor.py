"""`kitty-ops doctor` (and `start --preflight`): is this machine ready to run the stack?

One row per check, required or optional (the images row warns about an unpinned image and fails
on one that is no longer published). A required check that fails makes the doctor exit 1;
an optional one is a warning (CPU-only inference works, slowly). The llama-tier checks are
validate's own (what `start` would refuse), grouped by what they are about.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from kitty_ops.config import Settings
from kitty_ops.containers.compose import Compose, ComposeError, StackModel, major_version
from kitty_ops.host.platform import Host
from kitty_ops.llama import command, validate
from kitty_ops.problems import Problem
from kitty_ops.runbooks import Runbook
from kitty_ops.stack import graph

MIN_PYTHON = (3, 10)
MODELS_FREE_WARN = 10 * 2**30  # room for a new model or a model update
BACKUPS_FREE_WARN = 5 * 2**30


@dataclasses.dataclass
class Check:
    name: str
    required: bool
    status: str  # ok | warn | fail | info
    detail: str
    runbook: Runbook | None = None

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "runbook": self.runbook.path if self.runbook else None}


def run(settings: Settings, config_problems: list[Problem]) -> list[Check]:
    checks = [_python()]
    model, docker_checks = _docker(settings)
    checks += docker_checks
    report = validate.check(settings, config_problems)
    checks += _from_problems(report)
    checks += [_accelerator(Host.current(), report.engine), *_disk(settings), _env_permissions(settings), _plan(settings, model)]
    return checks


def failed(checks: list[Check]) -> bool:
    return any(c.required and c.status == "fail" for c in checks)


def _python() -> Check:
    version = platform.python_version()
    ok = sys.version_info[:2] >= MIN_PYTHON
    return Check("python", True, "ok" if ok else "fail",
                 f"{version} at {sys.executable}" + ("" if ok else f"; kitty-ops needs {'.'.join(map(str, MIN_PYTHON))}+"),
                 None if ok else Runbook.CONFIGURATION)


def _run(argv: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _docker(settings: Settings) -> tuple[StackModel | None, list[Check]]:
    required = settings.compose_enabled
    why_optional = "" if required else " (not needed: KITTY_COMPOSE_ENABLED=false)"
    if shutil.which("docker") is None:
        return None, [Check("docker CLI", required, "fail" if required else "info",
                            "not on PATH" + why_optional, Runbook.DOCKER)]
    checks = [Check("docker CLI", required, "ok", shutil.which("docker") or "")]
    daemon = _run(["docker", "version", "--format", "{{.Server.Version}}"])
    daemon_ok = daemon is not None and daemon.returncode == 0
    checks.append(Check("docker daemon", required, "ok" if daemon_ok else ("fail" if required else "info"),
                        f"engine {daemon.stdout.strip()}" if daemon_ok else
                        f"not reachable{why_optional}: {(daemon.stderr.strip().splitlines() or ['no answer'])[-1] if daemon else 'no answer'}",
                        None if daemon_ok else Runbook.DOCKER))
    found = _run(["docker", "compose", "version", "--short"])
    major = major_version(found.stdout) if found is not None and found.returncode == 0 else None
    compose_ok = major is not None and major >= 2
    checks.append(Check("compose v2", required, "ok" if compose_ok else ("fail" if required else "info"),
                        f"docker compose {found.stdout.strip()}" if compose_ok else f"`docker compose` v2 missing{why_optional}",
                        None if compose_ok else Runbook.DOCKER))
    model = None
    if compose_ok:
        try:
            model = Compose(settings.compose).model()
            checks.append(Check("compose file", required, "ok",
                                f"{len(model.services)} services in {', '.join(p.name for p in settings.compose.files)}"))
        except ComposeError as exc:
            checks.append(Check("compose file", required, "fail" if required else "info", exc.problem.message,
                                exc.problem.runbook))
    if model is not None:
        checks.append(_images(Compose(settings.compose).image_problems(model), len(model.services), required))
    return model, checks


def _images(problems: list[Problem], services: int, required: bool) -> Check:
    """The images of the enabled services (kitty_ops.containers.images): an unpublished one
    fails, one that says :latest or has no tag is a warning."""
    errors = [p for p in problems if p.is_error]
    if not problems:
        return Check("images", required, "ok", f"{services} services, each image pinned to a version or digest")
    shown = errors or problems
    detail = "; ".join(f"{p.message} (fix: {p.fix})" if p.is_error else p.message for p in shown[:3])
    if len(shown) > 3:
        detail += f"; and {len(shown) - 3} more (`kitty-ops validate` lists them)"
    status = ("fail" if required else "warn") if errors else "warn"
    return Check("images", required, status, detail, shown[0].runbook)


# Which validate problems belong to which row (by the runbook they name).
GROUPS = (
    ("configuration", True, (Runbook.CONFIGURATION,)),
    ("llama-server binary", True, (Runbook.ENGINE_BINARY,)),
    ("model files", True, (Runbook.MODEL_FILES, Runbook.VISION_MMPROJ)),
    ("ports free", True, (Runbook.PORT_CONFLICT,)),
    ("memory budget", False, (Runbook.OUT_OF_MEMORY,)),
)


def _from_problems(report: validate.Report) -> list[Check]:
    checks = []
    settings = report.settings
    for name, required, runbooks in GROUPS:
        mine = [p for p in report.problems if p.runbook in runbooks]
        errors = [p for p in mine if p.is_error]
        if errors:
            status = "fail" if required else "warn"
        elif mine:
            status = "warn"
        else:
            status = "ok"
        if mine:
            detail = "; ".join(f"{p.subject}: {p.message}" for p in (errors or mine)[:3])
        elif name == "llama-server binary" and report.engine:
            detail = f"{report.engine.binary_path} ({report.engine.version})"
        elif name == "model files":
            total = sum(report.model_bytes.values())
            detail = f"{len(report.model_bytes)} enabled servers, {total / 2**30:.1f} GiB of model files"
        elif name == "ports free":
            detail = ", ".join(f"{s.name}:{s.port}" for s in settings.enabled_servers) or "no server enabled"
        else:
            detail = "fine"
        checks.append(Check(name, required, status, detail, (errors or mine)[0].runbook if mine else None))
    return checks


def _accelerator(host: Host, engine: command.EngineInfo | None) -> Check:
    """What llama-server can offload to, asked of the engine itself (`--list-devices`): a Mac
    with Metal says nothing about a llama-server built without it. Apple Silicon is read from
    sysctl, since platform.machine() says x86_64 under Rosetta. On Linux, when the engine lists
    no device, an NVIDIA GPU through nvidia-smi (NVML); else CPU only."""
    if engine is None:
        devices, unknown = None, "no llama-server binary to ask"
    elif "--list-devices" not in engine.flags:
        devices, unknown = None, f"llama-server {engine.version} has no --list-devices"
    else:
        devices = host.engine_devices(engine.binary_path)
        unknown = f"{engine.binary_path} --list-devices did not answer"
    listed = "; ".join(map(str, devices or []))
    if host.is_macos:
        if not host.apple_silicon():
            return Check("accelerator", False, "warn", "Intel Mac: no Metal offload for llama.cpp; CPU only",
                         Runbook.HIGH_RESOURCE)
        chip = "Apple Silicon" + (" (this Python runs under Rosetta)" if host.translated() else "")
        if devices is None:
            return Check("accelerator", False, "warn", f"{chip}; Metal not confirmed: {unknown}",
                         Runbook.ENGINE_BINARY)
        if any(d.is_metal for d in devices):
            return Check("accelerator", False, "ok", f"{chip}: {listed}")
        return Check("accelerator", False, "warn",
                     f"{chip}, but llama-server lists no Metal device ({listed or 'a CPU-only build'}): models "
                     "answer slowly; install a Metal build: `brew install llama.cpp`", Runbook.ENGINE_BINARY)
    if devices:
        return Check("accelerator", False, "ok", f"llama-server: {listed}")
    smi = _run(["nvidia-smi", "--query-gpu=name,memory.total,memory.used,driver_version",
                "--format=csv,noheader"]) if shutil.which("nvidia-smi") else None
    if smi is not None and smi.returncode == 0 and smi.stdout.strip():
        gpus = "; ".join(", ".join(part.strip() for part in line.split(","))
                         for line in smi.stdout.strip().splitlines())
        if devices == []:
            return Check("accelerator", False, "warn", f"NVIDIA: {gpus}, but llama-server lists no device (a CPU-only "
                         "build): models answer slowly; build llama.cpp with CUDA", Runbook.ENGINE_BINARY)
        return Check("accelerator", False, "ok", f"NVIDIA: {gpus}")
    why = "nvidia-smi not found" if smi is None else "nvidia-smi found no GPU"
    return Check("accelerator", False, "warn", f"CPU only ({why}): models load and answer slowly",
                 Runbook.HIGH_RESOURCE)


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _disk(settings: Settings) -> list[Check]:
    checks = []
    for name, path, floor in (("disk: models", settings.models_dir, MODELS_FREE_WARN),
                              ("disk: backups", settings.backup.dir, BACKUPS_FREE_WARN)):
        free = shutil.disk_usage(_existing(path)).free
        ok = free >= floor
        checks.append(Check(name, False, "ok" if ok else "warn",
                            f"{free / 2**30:.1f} GiB free under {path}" + ("" if ok else f" (< {floor // 2**30} GiB)"),
                            None if ok else (Runbook.MODEL_FILES if "models" in name else Runbook.BACKUP)))
    return checks


def _env_permissions(settings: Settings) -> Check:
    """.env holds secrets (POSTGRES_PASSWORD, OBJECT_STORE_SECRET_KEY): other users must not read it."""
    path = settings.env_file
    if not path.is_file():
        return Check(".env permissions", True, "fail", f"{path} not found", Runbook.CONFIGURATION)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o007:
        return Check(".env permissions", True, "fail", f"{path} is {oct(mode)}: readable by every user; chmod 600 it",
                     Runbook.CONFIGURATION)
    if mode & 0o070:
        return Check(".env permissions", True, "warn", f"{path} is {oct(mode)}: readable by its group; chmod 600 it",
                     Runbook.CONFIGURATION)
    return Check(".env permissions", True, "ok", f"{path} is {oct(mode)}")


def _plan(settings: Settings, model: StackModel | None) -> Check:
    natives = list(settings.images.services) if settings.images.enabled else []
    try:
        plan, _ = graph.build([s.name for s in settings.enabled_servers], natives, model)
    except graph.CycleError as exc:
        return Check("start order", True, "fail", str(exc), Runbook.COMPOSE_FILE)
    levels = [", ".join(level) for level in plan.levels()]
    return Check("start order", False, "info", " -> ".join(f"[{level}]" for level in levels) or "nothing to start")
