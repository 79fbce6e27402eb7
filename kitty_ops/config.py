"""Configuration: the `.env` file plus the process environment plus defaults -> typed settings.

Reading never stops at the first bad value: every problem is collected (with the variable that
holds it and the fix) so that `kitty-ops validate` can show them all at once. A bad value falls
back to its default so that the remaining checks still run.

Precedence, highest first: the process environment (only LLAMACPP_* and KITTY_* variables, as
docker compose does for its own), the env file, the per-role defaults of the seed manual, the
generic defaults. Values are never printed except the ones kitty-ops parses itself.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
from pathlib import Path
from typing import Mapping

from dotenv import dotenv_values

from kitty_ops.host.platform import Host
from kitty_ops.problems import Problem, error, warning
from kitty_ops.runbooks import Runbook

DEFAULT_SERVERS = "q4,f16,summary,vision"
PREFIX = "LLAMACPP_"

# Per-role defaults, from the seed manual (ops/scripts/llama/start.sh of the original stack).
ROLE_DEFAULTS: dict[str, dict[str, object]] = {
    "q4": {
        "port": 8083, "ctx": 16384, "alias": "kitty-q4", "parallel": 4, "batch": 4096,
        "ubatch": 1024, "model": "athene-v2-agent/Athene-V2-Agent-Q4_K_M.gguf",
    },
    "f16": {
        "port": 8082, "ctx": 16384, "alias": "kitty-f16", "parallel": 4, "batch": 4096,
        "ubatch": 1024,
        "model": "llama-3-70b/Llama-3.3-70B-Instruct-F16/Llama-3.3-70B-Instruct-F16-00001-of-00004.gguf",
    },
    "summary": {
        "port": 8085, "ctx": 8192, "alias": "kitty-summary", "parallel": 2, "batch": 1024,
        "ubatch": 256, "model": "Hermes-3-8B/Hermes-3-Llama-3.1-8B.Q4_K_M.gguf",
    },
    "vision": {
        "port": 8086, "ctx": 8192, "alias": "kitty-vision", "parallel": 2, "batch": 1024,
        "ubatch": 256, "model": "gemma-3-27b-it/gemma-3-27b-it-q4_k_m.gguf",
        "mmproj": "gemma-3-27b-it/gemma-3-27b-it-mmproj-bf16.gguf",
    },
}
GENERIC_DEFAULTS: dict[str, object] = {"ctx": 8192, "parallel": 1, "batch": 2048, "ubatch": 512}

# Settings that may also be given once for every server as LLAMACPP_<SETTING>.
SHARED_SETTINGS = ("THREADS", "N_GPU_LAYERS", "FLASH_ATTN", "BIND", "EXTRA_ARGS", "CTX", "PARALLEL",
                   "BATCH", "UBATCH")
# The seed manual spelled these two out; both spellings work.
SETTING_ALIASES = {"BATCH": ("BATCH", "BATCH_SIZE"), "UBATCH": ("UBATCH", "UBATCH_SIZE")}

DRAIN_TIMEOUT = 60.0  # a chat-sized answer; a 70B F16 model writing a long one needs more

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}
FLASH_ATTN_WORDS = {**{w: "on" for w in TRUE_WORDS}, **{w: "off" for w in FALSE_WORDS}, "auto": "auto"}


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """Everything needed to start one llama-server, already validated for type and range."""

    name: str
    enabled: bool
    model: Path
    port: int
    bind: str
    ctx: int
    threads: int
    batch: int
    ubatch: int
    parallel: int
    n_gpu_layers: int
    flash_attn: str  # on | off | auto
    alias: str
    mmproj: Path | None
    extra_args: tuple[str, ...]
    jinja: bool
    metrics: bool
    bind_explicit: bool = False  # the operator chose the bind address (else 127.0.0.1 by default)
    drain_timeout: float = 60.0  # seconds a stop waits for requests in flight (kitty_ops.llama.drain)
    api_key: str = dataclasses.field(default="", repr=False)  # passed as LLAMA_API_KEY, never argv
    # Start fails unless the model is on the GPU as asked: not fallen back to the CPU, every layer
    # --n-gpu-layers asks for offloaded (kitty_ops.llama.offload).
    require_gpu: bool = False

    @property
    def auth(self) -> dict[str, str]:
        """The headers a request other than /health needs when the server has an API key."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def var_prefix(self) -> str:
        return f"{PREFIX}{self.name.upper()}_"

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "::", "") else self.bind
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class Settings:
    project_dir: Path
    env_file: Path
    env_file_found: bool
    servers: tuple[ServerSpec, ...]
    server_bin: str
    models_dir: Path
    logs_dir: Path
    health_timeout: float
    stop_grace: float
    drain_timeout: float  # for a recorded server no longer configured; each ServerSpec has its own
    drain: bool  # stop waits for requests in flight first (stop --no-drain: False)
    lock_timeout: float
    compose: "ComposeSettings"
    images: "NativeServices"
    e2e_url: str  # brain's /api/query when the app stack runs; empty: a chat completion against q4
    e2e_timeout: float
    probe_timeout: float  # `health`: seconds each probe may take, connect and read
    health_deadline: float  # `health`: seconds the whole check may take before it is UNKNOWN
    backup: "BackupSettings"
    supervise: "SuperviseSettings"  # kitty-ops supervise (kitty_ops.supervise)

    @property
    def compose_enabled(self) -> bool:
        return self.compose.enabled

    @property
    def enabled_servers(self) -> tuple[ServerSpec, ...]:
        return tuple(s for s in self.servers if s.enabled)

    def server(self, name: str) -> ServerSpec | None:
        return next((s for s in self.servers if s.name == name), None)


@dataclasses.dataclass(frozen=True)
class ComposeSettings:
    """The container tier: which compose files, which project (the only one kitty-ops touches)."""

    enabled: bool
    files: tuple[Path, ...]
    project: str
    profiles: tuple[str, ...]
    health_timeout: float  # per container, from `up` to healthy
    stop_timeout: int  # seconds compose gives a container between SIGTERM and SIGKILL
    env_file: Path
    # KITTY_OBJECT_STORE: which object store service runs. Each runs under a compose profile of its
    # own name, and `profiles` (what kitty-ops passes to compose) already holds the selected one.
    object_store: str = "rustfs"


BACKUP_PARTS = ("postgres", "redis", "objects", "env")


@dataclasses.dataclass(frozen=True)
class BackupSettings:
    """Where backups go and what they hold."""

    dir: Path  # each backup is a directory under it
    keep: int  # after a backup, keep this many complete ones (0: keep all)
    parts: tuple[str, ...]  # a subset of BACKUP_PARTS
    database_url: str = dataclasses.field(repr=False)  # empty: pg_dump in the compose postgres service
    postgres_user: str = "kitty"
    postgres_db: str = "kitty"
    s3_url: str = "http://127.0.0.1:9000"
    s3_access_key: str = dataclasses.field(default="kitty", repr=False)
    s3_secret_key: str = dataclasses.field(default="", repr=False)
    buckets: tuple[str, ...] = ()  # empty: every bucket the endpoint lists
    redis_timeout: float = 120.0  # seconds for BGSAVE to finish
    dump_timeout: float = 3600.0  # seconds for pg_dump / pg_restore


@dataclasses.dataclass(frozen=True)
class NativeService:
    """A native (non-container) process of the stack, such as the images service API."""

    name: str
    argv: tuple[str, ...]
    cwd: Path
    health_url: str | None  # None: ready once it has stayed alive for `settle` seconds
    settle: float
    needs: tuple[str, ...]  # graph node ids it waits for (e.g. compose:redis)


@dataclasses.dataclass(frozen=True)
class NativeServices:
    enabled: bool
    services: tuple[NativeService, ...]


@dataclasses.dataclass(frozen=True)
class SuperviseSettings:
    """`kitty-ops supervise`: how failures are detected and restarts paced (kitty_ops.supervise)."""

    probe_interval: float = 5.0  # seconds between /health probes of a running component
    probe_timeout: float = 5.0  # a probe slower than this counts as failed (hang detection)
    hang_probes: int = 3  # this many failed probes in a row: hung (a 503 "loading" never counts)
    backoff_initial: float = 1.0  # first restart delay; doubles per failure up to backoff_max
    backoff_max: float = 60.0
    backoff_reset: float = 60.0  # healthy this long: the next failure starts from backoff_initial
    max_failures: int = 5  # this many failures within failure_window: crash loop, state failed
    failure_window: float = 300.0
    poll: float = 0.05  # seconds between liveness checks of adopted processes without a pidfd
    alert_command: tuple[str, ...] = ()  # argv (KITTY_ALERT_COMMAND, parsed with shlex.split)
    alert_timeout: float = 10.0
    metrics_port: int = 0  # the supervisor's Prometheus endpoint on 127.0.0.1 (0: none)
    log_max_mb: float = 100.0  # a component's log over this is rotated (0: never)
    log_keep: int = 5  # rotated generations kept, gzip-compressed
    log_check: float = 30.0  # seconds between size checks


class _Reader:
    """Typed access to the merged variables; each bad value becomes a Problem, not an exception."""

    def __init__(self, values: Mapping[str, str], problems: list[Problem]):
        self.values = values
        self.problems = problems

    def raw(self, *names: str) -> tuple[str, str] | None:
        for name in names:
            value = self.values.get(name)
            if value is not None and value.strip() != "":
                return name, value.strip()
        return None

    def _bad(self, var: str, value: str, expected: str) -> None:
        self.problems.append(error(
            var, f"{var}={value!r} is not {expected}",
            f"set {var} to {expected} in the env file, or remove it to use the default",
            Runbook.CONFIGURATION))

    def integer(self, names: tuple[str, ...], default: int, lo: int, hi: int, what: str) -> int:
        found = self.raw(*names)
        if found is None:
            return default
        var, value = found
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or not lo <= number <= hi:
            self._bad(var, value, f"{what} (an integer from {lo} to {hi})")
            return default
        return number

    def number(self, names: tuple[str, ...], default: float, lo: float, hi: float, what: str) -> float:
        found = self.raw(*names)
        if found is None:
            return default
        var, value = found
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is None or not lo <= number <= hi:
            self._bad(var, value, f"{what} (a number from {lo:g} to {hi:g})")
            return default
        return number

    def boolean(self, names: tuple[str, ...], default: bool) -> bool:
        found = self.raw(*names)
        if found is None:
            return default
        var, value = found
        word = value.lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        self._bad(var, value, "a boolean (1/0, true/false, yes/no, on/off)")
        return default

    def choice(self, names: tuple[str, ...], default: str, words: Mapping[str, str], what: str) -> str:
        found = self.raw(*names)
        if found is None:
            return default
        var, value = found
        if value.lower() in words:
            return words[value.lower()]
        self._bad(var, value, what)
        return default

    def text(self, names: tuple[str, ...], default: str) -> str:
        found = self.raw(*names)
        return default if found is None else found[1]


def default_project_dir(environ: Mapping[str, str]) -> Path:
    """The directory holding .env and .logs: KITTY_PROJECT_DIR (the ops scripts set it to the
    checkout they live in, so they work from any directory), else the current directory."""
    return Path(environ.get("KITTY_PROJECT_DIR") or os.getcwd()).resolve()


def load_settings(
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, list[Problem]]:
    """Read configuration. Returns the settings and every problem found (possibly none)."""
    environ = os.environ if environ is None else environ
    project_dir = default_project_dir(environ)
    explicit = env_file is not None
    env_path = Path(env_file) if explicit else project_dir / ".env"
    if not env_path.is_absolute():
        env_path = (Path(os.getcwd()) / env_path).resolve()

    problems: list[Problem] = []
    file_values: dict[str, str] = {}
    found = env_path.is_file()
    if found:
        try:
            file_values = {k: v for k, v in dotenv_values(env_path).items() if v is not None}
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(error(
                str(env_path), f"cannot read the env file: {exc.__class__.__name__}",
                "check its permissions and encoding (UTF-8)", Runbook.CONFIGURATION))
    else:
        fix = ("copy .env.example to .env and edit it"
               if not explicit else "pass an existing file to --env-file")
        problems.append(error(str(env_path), "env file not found", fix, Runbook.CONFIGURATION))

    overrides = {k: v for k, v in environ.items() if k.startswith((PREFIX, "KITTY_"))}
    values = {**file_values, **overrides}
    # Relative paths in the env file are relative to the file, not to wherever the operator is.
    base_dir = env_path.parent
    settings = _build(values, problems, project_dir, env_path, found, base_dir)
    return settings, problems


def _path(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)


def _build(values: Mapping[str, str], problems: list[Problem], project_dir: Path,
           env_path: Path, found: bool, base_dir: Path) -> Settings:
    read = _Reader(values, problems)
    names = _server_names(read)
    models_dir = _path(base_dir, read.text(("LLAMACPP_MODELS_DIR",), "models"))
    servers = tuple(_server(read, name, models_dir) for name in names)
    _check_ports_unique(servers, problems)
    compose = _compose(read, project_dir, env_path)
    if found:  # without the env file there are no secrets to check: its own error says what to do
        _check_container_secrets(read, compose)

    return Settings(
        project_dir=project_dir,
        env_file=env_path,
        env_file_found=found,
        servers=servers,
        server_bin=read.text(("LLAMACPP_SERVER_BIN", "LLAMACPP_BIN"), "llama-server"),
        models_dir=models_dir,
        logs_dir=_path(project_dir, read.text(("KITTY_LOGS_DIR",), ".logs")),
        health_timeout=read.number(("LLAMACPP_HEALTH_TIMEOUT",), 300.0, 1, 86400, "seconds"),
        stop_grace=read.number(("KITTY_STOP_GRACE",), 10.0, 0, 3600, "seconds"),
        drain_timeout=read.number(("KITTY_DRAIN_TIMEOUT",), DRAIN_TIMEOUT, 0, 86400, "seconds"),
        drain=True,
        lock_timeout=read.number(("KITTY_LOCK_TIMEOUT",), 5.0, 0, 3600, "seconds"),
        compose=compose,
        images=_images(read, project_dir),
        e2e_url=read.text(("KITTY_E2E_URL",), ""),
        e2e_timeout=read.number(("KITTY_E2E_TIMEOUT",), 120.0, 1, 3600, "seconds"),
        probe_timeout=read.number(("KITTY_HEALTH_PROBE_TIMEOUT",), 2.0, 0.05, 60, "seconds"),
        health_deadline=read.number(("KITTY_HEALTH_DEADLINE",), 10.0, 0.1, 600, "seconds"),
        backup=_backup(read, project_dir),
        supervise=_supervise(read),
    )


COMPOSE_PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # compose's own rule for project names
PROFILE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")

# The object store (S3 API): a compose service each, under a profile of its own name; the first is
# the default. MinIO publishes no images since late 2025: this is its last one.
OBJECT_STORES = ("rustfs", "minio")
MINIO_LAST_IMAGE = "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
# Its keys and port: the new name first, then MinIO's old one (existing env files keep working).
OBJECT_STORE_ACCESS_VARS = ("OBJECT_STORE_ACCESS_KEY", "MINIO_ROOT_USER")
OBJECT_STORE_SECRET_VARS = ("OBJECT_STORE_SECRET_KEY", "MINIO_ROOT_PASSWORD")
OBJECT_STORE_PORT_VARS = ("OBJECT_STORE_PORT", "MINIO_PORT")
# Keys both stores take: MinIO's root rules (access key >= 3, secret >= 8 characters) and RustFS's
# rules for IAM keys (3 to 128, 8 to 40), so that the same keys work after a move to RustFS.
ACCESS_KEY_LENGTH = (3, 128)
SECRET_KEY_LENGTH = (8, 40)
BUILT_IN_KEYS = {"rustfsadmin": "RustFS's built-in default", "minioadmin": "MinIO's built-in default"}
WELL_KNOWN_SECRETS = {**BUILT_IN_KEYS, "changeme": "a placeholder", "password": "a placeholder",
                      "secret": "a placeholder"}


def _check_key(problem, store: str, what: str, main_var: str, found: tuple[str, str],
               length: tuple[int, int], known: dict[str, str], hint: str) -> None:
    """One of the object store's keys against RustFS's and MinIO's rules: long enough for both,
    short enough for RustFS (only a warning on MinIO, which takes longer ones, so an old install
    still starts), and not a value known to anyone. The value itself is never in a message."""
    var, value = found
    lo, hi = length
    wanted = f"{lo} to {hi} characters, {hint}"
    if len(value) < lo:
        problem(var, f"the object store's {what} has {len(value)} characters; RustFS and MinIO need at least {lo}",
                f"set {main_var} to {wanted}")
    elif len(value) > hi:
        problem(var, f"the object store's {what} has {len(value)} characters; RustFS keys have at most {hi}",
                f"set {main_var} to {wanted}" + (" before moving to RustFS" if store == "minio" else ""),
                store == "rustfs")
    elif value.lower() in known:
        problem(var, f"the object store's {what} is {known[value.lower()]}, known to anyone", f"set {main_var} to {wanted}")


def _compose(read: _Reader, project_dir: Path, env_path: Path) -> ComposeSettings:
    files_text = read.text(("KITTY_COMPOSE_FILE",), "infra/compose/docker-compose.yml")
    # Several files (an override on top of the base) are separated like COMPOSE_FILE: ':' or ','.
    files = tuple(_path(project_dir, f.strip()) for f in re.split(r"[:,]", files_text) if f.strip())
    project = read.text(("KITTY_COMPOSE_PROJECT",), "kitty")
    if not COMPOSE_PROJECT_RE.match(project):
        read._bad("KITTY_COMPOSE_PROJECT", project, "a compose project name (lower-case letters, digits, '-' and '_')")
        project = "kitty"
    profiles = tuple(p.strip() for p in read.text(("KITTY_COMPOSE_PROFILES",), "").split(",") if p.strip())
    for profile in profiles:
        if not PROFILE_RE.match(profile):
            read._bad("KITTY_COMPOSE_PROFILES", profile, "a comma-separated list of profile names (e.g. app,observability)")
    store = read.choice(("KITTY_OBJECT_STORE",), "rustfs", {s: s for s in OBJECT_STORES}, " or ".join(OBJECT_STORES))
    for other in OBJECT_STORES:
        if other != store and other in profiles:  # both would publish the object store's ports
            read.problems.append(error(
                "KITTY_COMPOSE_PROFILES", f"{other!r} is an object store's profile, and KITTY_OBJECT_STORE "
                f"selects {store!r}: only one object store runs",
                f"remove {other!r} from KITTY_COMPOSE_PROFILES; choose the object store with KITTY_OBJECT_STORE",
                Runbook.CONFIGURATION))
    chosen = [p for p in profiles if PROFILE_RE.match(p) and p not in OBJECT_STORES]
    return ComposeSettings(
        enabled=read.boolean(("KITTY_COMPOSE_ENABLED",), True),
        files=files,
        project=project,
        profiles=(*chosen, store),  # the object store's service runs under the profile of its name
        health_timeout=read.number(("KITTY_COMPOSE_TIMEOUT",), 180.0, 1, 86400, "seconds"),
        stop_timeout=read.integer(("KITTY_COMPOSE_STOP_TIMEOUT",), 10, 0, 3600, "seconds"),
        env_file=env_path,
        object_store=store,
    )


def _check_container_secrets(read: _Reader, compose: ComposeSettings) -> None:
    """The container tier's credentials, before anything starts. Compose cannot require the object
    store's keys itself (`:?`): they fall back to MinIO's old names, and compose evaluates a `:?`
    nested in a default even when the outer variable is set (seen with compose v2.40.3). Grafana's
    password cannot be `:?` either: compose interpolates the services of inactive profiles too, so it
    would be required of every stack. Values are never part of a message."""
    if not compose.enabled:
        return
    store = "RustFS" if compose.object_store == "rustfs" else "MinIO"
    if compose.object_store == "minio":  # (an image of it that is gone is kitty_ops.containers.images's rule)
        read.problems.append(warning(
            "KITTY_OBJECT_STORE", "MinIO is selected: it gets no more fixes (MinIO stopped publishing images in "
            f"late 2025; its last one is {MINIO_LAST_IMAGE})",
            "move to RustFS when you can: back up, set KITTY_OBJECT_STORE=rustfs, restore the objects "
            "(the runbook's \"Moving from MinIO to RustFS\")", Runbook.BACKUP))
    elif (read.raw("KITTY_OBJECT_STORE") is None and read.raw(OBJECT_STORE_SECRET_VARS[0]) is None
          and read.raw(*OBJECT_STORE_SECRET_VARS[1:]) is not None):
        read.problems.append(error(
            "KITTY_OBJECT_STORE", "not set, and this env file has MinIO's keys under their old name "
            "(MINIO_ROOT_PASSWORD): this stack's objects are in MinIO, and the default object store is now "
            "RustFS, which would start empty",
            "set KITTY_OBJECT_STORE=minio to keep MinIO, or move the objects: back up, set "
            "KITTY_OBJECT_STORE=rustfs, restore the objects (the runbook's \"Moving from MinIO to RustFS\")",
            Runbook.BACKUP))

    def problem(var: str, message: str, fix: str, blocking: bool = True) -> None:
        read.problems.append((error if blocking else warning)(var, message, fix, Runbook.CONFIGURATION))

    access = read.raw(*OBJECT_STORE_ACCESS_VARS) or (OBJECT_STORE_ACCESS_VARS[0], "kitty")
    _check_key(problem, compose.object_store, "access key", OBJECT_STORE_ACCESS_VARS[0], access,
               ACCESS_KEY_LENGTH, BUILT_IN_KEYS, "a name of your own")
    secret = read.raw(*OBJECT_STORE_SECRET_VARS)
    lo, hi = SECRET_KEY_LENGTH
    if secret is None:
        problem(OBJECT_STORE_SECRET_VARS[0], f"the object store's secret key is not set ({store} refuses to "
                "start without one)", f"set {OBJECT_STORE_SECRET_VARS[0]} in the env file to {lo} to {hi} "
                "characters, e.g. the output of `openssl rand -hex 16`")
    else:
        _check_key(problem, compose.object_store, "secret key", OBJECT_STORE_SECRET_VARS[0], secret,
                   SECRET_KEY_LENGTH, WELL_KNOWN_SECRETS, "e.g. the output of `openssl rand -hex 16`")
    # A profile's own password: required only when the profile runs (compose's `:?` would require
    # it of every stack), and never the service's built-in default or a placeholder.
    for profile, var, service, who, unset_means, built_in in (
            ("observability", "GRAFANA_ADMIN_PASSWORD", "Grafana", "Grafana's admin password",
             "the observability profile would start Grafana with admin/admin", "admin"),
            ("rabbitmq", "RABBITMQ_DEFAULT_PASS", "RabbitMQ", "RabbitMQ's password",
             "the rabbitmq profile would start a broker that refuses to run", "guest")):
        if profile not in compose.profiles:
            continue
        found = read.raw(var)
        if found is None:
            problem(var, f"{who} is not set: {unset_means}",
                    f"set {var} in the env file, or remove {profile} from KITTY_COMPOSE_PROFILES")
        elif found[1].lower() in {built_in, *WELL_KNOWN_SECRETS}:
            what = f"{service}'s built-in default" if found[1].lower() == built_in else WELL_KNOWN_SECRETS[found[1].lower()]
            problem(var, f"{who} is {what}, known to anyone", f"set {var} to a password of your own")


def _images(read: _Reader, project_dir: Path) -> NativeServices:
    """The images service of the seed stack: an HTTP API and its RQ worker, both native."""
    enabled = read.boolean(("IMAGES_SERVICE_ENABLED",), False)
    port = read.integer(("IMAGES_SERVICE_PORT",), 8089, 1, 65535, "a TCP port")
    redis_port = read.integer(("REDIS_PORT",), 6379, 1, 65535, "a TCP port")
    cwd = _path(project_dir, read.text(("IMAGES_SERVICE_DIR",), "."))
    placeholders = {"{port}": str(port), "{redis_port}": str(redis_port)}

    def command(var: str, default: str) -> tuple[str, ...]:
        try:
            argv = shlex.split(read.text((var,), default))
        except ValueError as exc:
            read.problems.append(error(var, f"cannot split the command: {exc}",
                                       "balance the quotes in the value", Runbook.CONFIGURATION))
            return ()
        if enabled and not argv:
            read.problems.append(error(var, "empty command", f"set {var} or IMAGES_SERVICE_ENABLED=false",
                                       Runbook.CONFIGURATION))
        # Placeholders are replaced token by token: the command never passes through a shell.
        for key, value in placeholders.items():
            argv = [token.replace(key, value) for token in argv]
        return tuple(argv)

    worker = NativeService(
        name="images-worker",
        argv=command("IMAGES_SERVICE_WORKER_CMD", "rq worker images --url redis://127.0.0.1:{redis_port}"),
        cwd=cwd, health_url=None,
        settle=read.number(("IMAGES_SERVICE_WORKER_SETTLE",), 1.0, 0, 60, "seconds"),
        needs=("compose:redis",),
    )
    api = NativeService(
        name="images-api",
        argv=command("IMAGES_SERVICE_API_CMD",
                     "uvicorn images_service.main:app --host 127.0.0.1 --port {port}"),
        cwd=cwd, health_url=f"http://127.0.0.1:{port}/health", settle=0.0,
        needs=("native:images-worker",),
    )
    return NativeServices(enabled=enabled, services=(worker, api))


def _backup(read: _Reader, project_dir: Path) -> BackupSettings:
    parts = tuple(p.strip() for p in read.text(("KITTY_BACKUP_PARTS",), ",".join(BACKUP_PARTS)).split(",") if p.strip())
    for part in parts:
        if part not in BACKUP_PARTS:
            read._bad("KITTY_BACKUP_PARTS", part, f"a comma-separated subset of {','.join(BACKUP_PARTS)}")
    port = read.integer(OBJECT_STORE_PORT_VARS, 9000, 1, 65535, "a TCP port")
    return BackupSettings(
        dir=_path(project_dir, read.text(("KITTY_BACKUP_DIR",), "~/KITTY_backups")),
        keep=read.integer(("KITTY_BACKUP_KEEP",), 0, 0, 100000, "a number of backups (0: keep all)"),
        parts=tuple(p for p in parts if p in BACKUP_PARTS),
        database_url=read.text(("KITTY_BACKUP_DATABASE_URL",), ""),
        postgres_user=read.text(("POSTGRES_USER",), "kitty"),
        postgres_db=read.text(("POSTGRES_DB",), read.text(("POSTGRES_USER",), "kitty")),
        s3_url=read.text(("KITTY_BACKUP_S3_URL",), f"http://127.0.0.1:{port}"),
        s3_access_key=read.text(OBJECT_STORE_ACCESS_VARS, "kitty"),
        s3_secret_key=read.text(OBJECT_STORE_SECRET_VARS, ""),
        buckets=tuple(b.strip() for b in read.text(("KITTY_BACKUP_BUCKETS",), "").split(",") if b.strip()),
        redis_timeout=read.number(("KITTY_BACKUP_REDIS_TIMEOUT",), 120.0, 1, 86400, "seconds"),
        dump_timeout=read.number(("KITTY_BACKUP_TIMEOUT",), 3600.0, 1, 7 * 86400, "seconds"),
    )


def _server_names(read: _Reader) -> list[str]:
    raw = read.text(("LLAMACPP_SERVERS",), DEFAULT_SERVERS)
    names: list[str] = []
    for item in (part.strip().lower() for part in raw.split(",")):
        if not item:
            continue
        if not NAME_RE.match(item):
            read.problems.append(error(
                "LLAMACPP_SERVERS", f"server name {item!r} is not valid",
                "use lower-case letters, digits and '_', starting with a letter (e.g. q4,f16)",
                Runbook.CONFIGURATION))
        elif item in names:
            read.problems.append(error(
                "LLAMACPP_SERVERS", f"server name {item!r} is listed twice",
                "list each server once", Runbook.CONFIGURATION))
        else:
            names.append(item)
    return names


@functools.cache
def default_threads() -> int:
    """llama.cpp's own default: the performance cores on macOS (os.cpu_count() counts the
    efficiency cores too: 32 on an M3 Ultra, which has 24 performance cores), the CPU count
    elsewhere. Asked of the machine once per process."""
    return Host.current().performance_cores() or os.cpu_count() or 1


def _server(read: _Reader, name: str, models_dir: Path) -> ServerSpec:
    role = {**GENERIC_DEFAULTS, **ROLE_DEFAULTS.get(name, {})}
    own = f"{PREFIX}{name.upper()}_"

    def var(setting: str) -> tuple[str, ...]:
        spellings = SETTING_ALIASES.get(setting, (setting,))
        names = tuple(own + s for s in spellings)
        if setting in SHARED_SETTINGS:
            names += tuple(PREFIX + s for s in spellings)
        return names

    enabled = read.boolean(var("ENABLED"), True)
    model_text = read.text(var("MODEL"), str(role.get("model", "")))
    if not model_text and enabled:
        read.problems.append(error(
            own + "MODEL", f"no model file set for server {name!r}",
            f"set {own}MODEL to a .gguf path (relative to LLAMACPP_MODELS_DIR or absolute)",
            Runbook.MODEL_FILES))
    port_default = int(role.get("port", 0))
    port = read.integer(var("PORT"), port_default, 1, 65535, "a TCP port")
    if port == 0 and enabled:
        read.problems.append(error(
            own + "PORT", f"no port set for server {name!r}",
            f"set {own}PORT to a free TCP port", Runbook.CONFIGURATION))
    mmproj_text = read.text(var("MMPROJ"), str(role.get("mmproj", "")))
    extra_text = read.text(var("EXTRA_ARGS"), "")
    try:
        extra = tuple(shlex.split(extra_text))
    except ValueError as exc:  # unbalanced quotes
        read.problems.append(error(
            own + "EXTRA_ARGS", f"cannot split extra arguments: {exc}",
            "balance the quotes in the value", Runbook.CONFIGURATION))
        extra = ()

    spec = ServerSpec(
        name=name,
        enabled=enabled,
        model=_path(models_dir, model_text) if model_text else Path(""),
        port=port,
        bind=read.text(var("BIND"), "127.0.0.1"),
        bind_explicit=read.raw(*var("BIND")) is not None,
        drain_timeout=read.number((own + "DRAIN_TIMEOUT", "KITTY_DRAIN_TIMEOUT"), DRAIN_TIMEOUT, 0, 86400, "seconds"),
        api_key=read.text((own + "API_KEY", PREFIX + "API_KEY"), ""),
        ctx=read.integer(var("CTX"), int(role["ctx"]), 0, 10_000_000, "a context size"),
        threads=read.integer(var("THREADS"), default_threads(), -1, 1024, "a thread count"),
        batch=read.integer(var("BATCH"), int(role["batch"]), 1, 1_000_000, "a batch size"),
        ubatch=read.integer(var("UBATCH"), int(role["ubatch"]), 1, 1_000_000, "a micro-batch size"),
        parallel=read.integer(var("PARALLEL"), int(role["parallel"]), -1, 1024, "a slot count"),
        n_gpu_layers=read.integer(var("N_GPU_LAYERS"), 999, -1, 100_000, "a layer count"),
        flash_attn=read.choice(var("FLASH_ATTN"), "on", FLASH_ATTN_WORDS, "on, off or auto"),
        alias=read.text(var("ALIAS"), str(role.get("alias", f"kitty-{name}"))),
        mmproj=_path(models_dir, mmproj_text) if mmproj_text else None,
        extra_args=extra,
        jinja=read.boolean((own + "TOOL_CALLING", PREFIX + "TOOL_CALLING"), True),
        metrics=read.boolean((own + "METRICS", PREFIX + "METRICS"), True),
        require_gpu=read.boolean((own + "REQUIRE_GPU", "LLAMACPP_REQUIRE_GPU"), False),
    )
    if enabled and spec.require_gpu and spec.n_gpu_layers == 0:
        found = read.raw(own + "REQUIRE_GPU", "LLAMACPP_REQUIRE_GPU")
        setting = found[0] if found else own + "REQUIRE_GPU"
        read.problems.append(error(
            setting, f"server {name!r} must run on the GPU ({setting}=true) but its N_GPU_LAYERS is 0: "
            "it would offload no layer",
            f"set {own}REQUIRE_GPU=false to let it run on the CPU, or {own}N_GPU_LAYERS above 0 "
            "(999: every layer)", Runbook.CPU_FALLBACK))
    return spec


def _check_ports_unique(servers: tuple[ServerSpec, ...], problems: list[Problem]) -> None:
    by_port: dict[int, str] = {}
    for spec in servers:
        if not spec.enabled or spec.port == 0:
            continue
        other = by_port.get(spec.port)
        if other:
            problems.append(error(
                f"{spec.var_prefix}PORT",
                f"servers {other!r} and {spec.name!r} are both set to port {spec.port}",
                f"give each server its own port ({spec.var_prefix}PORT)", Runbook.PORT_CONFLICT))
        else:
            by_port[spec.port] = spec.name


def _supervise(read: _Reader) -> SuperviseSettings:
    alert: tuple[str, ...] = ()
    found = read.raw("KITTY_ALERT_COMMAND")
    if found is not None:
        try:  # an argv, never run through a shell
            alert = tuple(shlex.split(found[1]))
        except ValueError as exc:
            read.problems.append(error(
                "KITTY_ALERT_COMMAND", f"KITTY_ALERT_COMMAND cannot be split into arguments: {exc}",
                "quote it as a command line, e.g. KITTY_ALERT_COMMAND='ntfy publish kitty'",
                Runbook.CONFIGURATION))
    backoff_initial = read.number(("KITTY_SUPERVISE_BACKOFF_INITIAL",), 1.0, 0, 3600, "seconds")
    return SuperviseSettings(
        probe_interval=read.number(("KITTY_SUPERVISE_PROBE_INTERVAL",), 5.0, 0.05, 3600, "seconds"),
        probe_timeout=read.number(("KITTY_SUPERVISE_PROBE_TIMEOUT",), 5.0, 0.05, 600, "seconds"),
        hang_probes=read.integer(("KITTY_SUPERVISE_HANG_PROBES",), 3, 1, 1000, "a count"),
        backoff_initial=backoff_initial,
        backoff_max=max(backoff_initial, read.number(("KITTY_SUPERVISE_BACKOFF_MAX",), 60.0, 0, 86400, "seconds")),
        backoff_reset=read.number(("KITTY_SUPERVISE_BACKOFF_RESET",), 60.0, 0, 86400, "seconds"),
        max_failures=read.integer(("KITTY_SUPERVISE_MAX_FAILURES",), 5, 1, 1000, "a count"),
        failure_window=read.number(("KITTY_SUPERVISE_FAILURE_WINDOW",), 300.0, 1, 86400 * 7, "seconds"),
        poll=read.number(("KITTY_SUPERVISE_POLL",), 0.05, 0.005, 10, "seconds"),
        alert_command=alert,
        alert_timeout=read.number(("KITTY_ALERT_TIMEOUT",), 10.0, 0.1, 3600, "seconds"),
        metrics_port=read.integer(("KITTY_METRICS_PORT",), 0, 0, 65535, "a TCP port (0: no endpoint)"),
        log_max_mb=read.number(("KITTY_LOG_MAX_MB",), 100.0, 0, 1_000_000, "megabytes (0: never rotate)"),
        log_keep=read.integer(("KITTY_LOG_KEEP",), 5, 1, 1000, "a count"),
        log_check=read.number(("KITTY_LOG_CHECK_INTERVAL",), 30.0, 0.1, 86400, "seconds"),
    )
