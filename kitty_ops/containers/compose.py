"""The container tier, driven through the `docker compose` CLI (v2) and nothing else.

The stack's model is what compose itself resolves (`docker compose config --format json`), so
interpolation, profiles and override files mean exactly what they mean to compose. Every command
names the configured project (`-p`), so no other project's containers are ever touched; container
states are read with `docker inspect` on the IDs compose reports for that project.

Parsing (parse_model, parse_inspect) is pure and unit-tested; the Compose class only runs
commands, each with a deadline. Before a start, images missing locally are pulled (pull_missing);
what is wrong with an image reference is kitty_ops.containers.images's rule.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Iterable, Mapping

from kitty_ops.config import ComposeSettings
from kitty_ops.containers import engine as engines, images
from kitty_ops.outcomes import Progress
from kitty_ops.problems import Problem, error, warning
from kitty_ops.runbooks import Runbook

NEEDS_LABEL = "kitty-ops.needs"  # cross-tier edges: "llama:*", "llama:q4", "images-api"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
QUICK = 20.0  # deadline for commands that only read state
PULL_TIMEOUT = 900.0  # deadline for each image pull (all run at once)
ENGINE_HINT = ("start Docker Desktop" if sys.platform == "darwin"
               else "start the Docker daemon (systemctl start docker)")


class ComposeError(Exception):
    """A compose command failed; carries the Problem to show the operator."""

    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class Port:
    host_ip: str
    published: int
    target: int


@dataclasses.dataclass(frozen=True)
class ServiceModel:
    name: str
    image: str
    depends_on: Mapping[str, str]  # service -> condition (service_healthy, service_started, ...)
    has_healthcheck: bool
    needs: tuple[str, ...]  # from the kitty-ops.needs label
    ports: tuple[Port, ...]
    # Resolved values may be secrets: kept for the checks (POSTGRES_USER), never shown.
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    pull_policy: str = ""  # compose's own: "never" and "build" mean kitty-ops pulls nothing either


@dataclasses.dataclass(frozen=True)
class StackModel:
    project: str
    services: Mapping[str, ServiceModel]


@dataclasses.dataclass(frozen=True)
class ContainerState:
    service: str
    id: str
    status: str  # created | running | restarting | exited | dead | paused | removing
    health: str  # healthy | unhealthy | starting | "" (no healthcheck)
    exit_code: int
    restarts: int
    started_at: str
    last_probe: str = ""  # the last healthcheck's exit code and output, for failure reports
    image: str = ""
    probe_seconds: float | None = None  # how long the last healthcheck took
    started_epoch: float | None = None  # started_at as Unix seconds (None: never started)
    ports: tuple[str, ...] = ()  # published ports, as `docker ps` shows them: 127.0.0.1:5432->5432/tcp
    memory_bytes: int | None = None  # memory in use, as `docker stats` counts it (None: not asked)

    def describe(self) -> str:
        if self.status in ("exited", "dead"):
            return f"{self.status} with code {self.exit_code}"
        return f"{self.status}{f' ({self.health})' if self.health else ''}"


# ------------------------------------------------------------------------------ pure parsing

def parse_model(data: Mapping) -> StackModel:
    services = {}
    for name, raw in (data.get("services") or {}).items():
        health = raw.get("healthcheck") or {}
        test = health.get("test") or []
        has_healthcheck = bool(test) and test[0] != "NONE" and not health.get("disable", False)
        labels = raw.get("labels") or {}
        if isinstance(labels, list):  # compose normalises to a map, but be lenient
            labels = dict(item.split("=", 1) for item in labels if "=" in item)
        needs = tuple(n.strip() for n in str(labels.get(NEEDS_LABEL, "")).split(",") if n.strip())
        ports = []
        for port in raw.get("ports") or []:
            published = str(port.get("published") or "")
            if published.isdigit():
                ports.append(Port(port.get("host_ip") or "0.0.0.0", int(published), int(port["target"])))
        # `required: false` on a service compose did not enable (another profile's, such as the
        # object store not selected) is no dependency, as for compose itself.
        depends = {dep: (spec or {}).get("condition", "service_started")
                   for dep, spec in (raw.get("depends_on") or {}).items()
                   if (spec or {}).get("required", True) or dep in (data.get("services") or {})}
        environment = {k: str(v) for k, v in (raw.get("environment") or {}).items() if v is not None}
        services[name] = ServiceModel(name, str(raw.get("image") or ""), depends, has_healthcheck,
                                      needs, tuple(ports), environment, str(raw.get("pull_policy") or ""))
    return StackModel(str(data.get("name") or ""), services)


def parse_inspect(data: Iterable[Mapping], project: str) -> dict[str, ContainerState]:
    """`docker inspect` output -> state per service, for containers of `project` only."""
    states = {}
    for item in data:
        labels = (item.get("Config") or {}).get("Labels") or {}
        if labels.get(PROJECT_LABEL) != project or labels.get("com.docker.compose.oneoff") == "True":
            continue
        state = item.get("State") or {}
        service = labels.get(SERVICE_LABEL, "")
        probes = (state.get("Health") or {}).get("Log") or []
        last_probe, probe_seconds = "", None
        if probes:
            output = " ".join(str(probes[-1].get("Output", "")).split())[:300]
            last_probe = f"exit {probes[-1].get('ExitCode')}{': ' + output if output else ''}"
            start, end = epoch(probes[-1].get("Start")), epoch(probes[-1].get("End"))
            probe_seconds = end - start if start is not None and end is not None and end >= start else None
        states[service] = ContainerState(
            service=service, id=str(item.get("Id", ""))[:12], status=str(state.get("Status", "")),
            health=str((state.get("Health") or {}).get("Status", "")),
            exit_code=int(state.get("ExitCode") or 0), restarts=int(item.get("RestartCount") or 0),
            started_at=str(state.get("StartedAt", "")), last_probe=last_probe,
            image=str((item.get("Config") or {}).get("Image", "")), probe_seconds=probe_seconds,
            started_epoch=epoch(state.get("StartedAt")),
            ports=published_ports((item.get("NetworkSettings") or {}).get("Ports")))
    return states


def published_ports(bindings: object) -> tuple[str, ...]:
    """The engine's `NetworkSettings.Ports` ({"5432/tcp": [{"HostIp": ..., "HostPort": ...}]})
    -> ("127.0.0.1:5432->5432/tcp", ...); ports exposed but not published are left out."""
    found = []
    for inside, outside in (bindings.items() if isinstance(bindings, Mapping) else ()):
        for binding in outside or ():
            if isinstance(binding, Mapping) and binding.get("HostPort"):
                host = str(binding.get("HostIp") or "0.0.0.0")
                found.append(f"{f'[{host}]' if ':' in host else host}:{binding['HostPort']}->{inside}")
    return tuple(sorted(set(found)))


_RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def epoch(text: object) -> float | None:
    """Docker's RFC 3339 timestamps (nanoseconds, `Z` or an offset) -> Unix seconds; None for
    the zero time of a container never started, or anything unreadable."""
    match = _RFC3339.match(str(text or ""))
    if not match or match.group(1) == "0001":
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = float("0." + match.group(7)) if match.group(7) else 0.0
    zone = match.group(8)
    offset = 0 if zone == "Z" else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    stamp = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.timezone.utc).timestamp()
    return stamp + fraction - offset


def parse_ps_ids(text: str) -> dict[str, str]:
    """`docker compose ps --format json` (JSON lines, or one array in older v2) -> service -> id."""
    text = text.strip()
    if not text:
        return {}
    items = json.loads(text) if text.startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
    return {item["Service"]: item["ID"] for item in items if item.get("Service") and item.get("ID")}


def major_version(text: str) -> int | None:
    match = re.search(r"v?(\d+)\.\d+", text)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------------- commands

@dataclasses.dataclass
class Completed:
    code: int
    out: str
    err: str


class Compose:
    def __init__(self, settings: ComposeSettings, all_profiles: bool = False):
        self.settings = settings
        self.all_profiles = all_profiles  # stop/down must see every service, whatever is enabled
        self.ids: dict[str, str] = {}  # service -> container id, as compose last reported it
        # The engine's own API where it can be reached directly; None: the docker CLI does it all.
        self.engine = engines.connect(self.environment())

    @property
    def project(self) -> str:
        return self.settings.project

    @property
    def profiles(self) -> tuple[str, ...]:
        return ("*",) if self.all_profiles else tuple(self.settings.profiles)

    def argv(self, *args: str) -> list[str]:
        argv = ["docker", "compose", "-p", self.project, "--env-file", str(self.settings.env_file)]
        for path in self.settings.files:
            argv += ["-f", str(path)]
        for profile in self.profiles:
            argv += ["--profile", profile]
        return argv + list(args)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # Ambient compose variables would silently change which project or files are used.
        for var in ("COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "COMPOSE_PROFILES", "COMPOSE_ENV_FILES"):
            env.pop(var, None)
        env["KITTY_ENV_FILE"] = str(self.settings.env_file)  # app services' env_file
        return env

    def run(self, argv: list[str], timeout: float) -> Completed:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  env=self.environment(), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Completed(124, "", f"`{' '.join(argv[:2] + argv[-3:])}` did not finish within {timeout:g}s")
        except FileNotFoundError:
            return Completed(127, "", f"{argv[0]}: command not found")
        return Completed(proc.returncode, proc.stdout, proc.stderr)

    def compose(self, *args: str, timeout: float = QUICK) -> Completed:
        return self.run(self.argv(*args), timeout)

    # --- preflight and model

    def preflight(self, known: StackModel | None = None) -> tuple[list[Problem], StackModel | None]:
        """docker CLI, daemon, compose v2, compose file; the model when all is well. The three
        commands run at once (each is ~0.1 s of CLI start-up); the first failure is reported.
        `known`: the model's outline, still current (kitty_ops.containers.outline); then only
        the daemon is asked, and `known` is returned."""
        if shutil.which("docker") is None:
            return [error("docker", "the docker CLI is not on PATH",
                          "install Docker (Docker Desktop on macOS, docker.io or docker-ce on Linux), "
                          "or pass --no-compose / set KITTY_COMPOSE_ENABLED=false", Runbook.DOCKER)], None
        missing = self._missing_files()
        if missing:
            return missing, None
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            daemon = pool.submit(self.engine_version)
            model = pool.submit(lambda: known) if known is not None else pool.submit(self._model_or_problem)
        if daemon.result().code != 0:
            return [error("docker daemon", f"the Docker daemon is not reachable: {_last_line(daemon.result().err)}",
                          f"{ENGINE_HINT}, then run start-all again", Runbook.DOCKER)], None
        resolved = model.result()
        if isinstance(resolved, StackModel):
            return [], resolved  # `docker compose config` ran, so compose v2 is there
        found = self.run(["docker", "compose", "version", "--short"], QUICK)
        major = major_version(found.out) if found.code == 0 else None
        if major is None or major < 2:
            return [error("docker compose", "compose v2 (`docker compose`) is not available"
                          + (f" (found {found.out.strip()})" if found.code == 0 else ""),
                          "install the compose v2 plugin (docker-compose-plugin); the Python "
                          "docker-compose v1 is not supported", Runbook.DOCKER)], None
        return [resolved], None

    def engine_version(self, timeout: float = QUICK) -> Completed:
        """The engine's version, as `docker version --format {{.Server.Version}}` prints it."""
        if self.engine is None:
            return self.run(["docker", "version", "--format", "{{.Server.Version}}"], timeout)
        try:
            return Completed(0, self.engine.version(timeout) + "\n", "")
        except engines.EngineError as exc:
            return Completed(1, "", str(exc))

    def _missing_files(self) -> list[Problem]:
        missing = [str(p) for p in self.settings.files if not p.is_file()]
        if not missing:
            return []
        return [error("KITTY_COMPOSE_FILE", f"compose file not found: {', '.join(missing)}",
                      "point KITTY_COMPOSE_FILE at infra/compose/docker-compose.yml "
                      "(':'-separate override files)", Runbook.COMPOSE_FILE)]

    def _model_or_problem(self) -> StackModel | Problem:
        try:
            return self.model()
        except ComposeError as exc:
            return exc.problem

    def model(self, timeout: float = QUICK) -> StackModel:
        # The resolved model holds interpolated secrets: it is parsed, never printed or logged.
        result = self.compose("config", "--format", "json", timeout=timeout)
        if result.code != 0:
            raise ComposeError(error(
                ", ".join(str(p) for p in self.settings.files),
                f"docker compose rejects the configuration: {_last_line(result.err)}",
                "fix the compose file or the variable it names in the env file", Runbook.COMPOSE_FILE))
        return parse_model(json.loads(result.out))

    # --- images

    def image_sources(self) -> dict[str, str]:
        """Each service's `image:` as written (`${BRAIN_IMAGE:-kitty/brain:...}`), to name the
        variable that sets it; {} when compose cannot say. Holds no resolved value."""
        result = self.compose("config", "--no-interpolate", "--format", "json")
        if result.code != 0:
            return {}
        try:
            services = json.loads(result.out).get("services") or {}
        except ValueError:
            return {}
        return {name: str((raw or {}).get("image") or "") for name, raw in services.items()}

    def image_problems(self, model: StackModel | None = None) -> list[Problem]:
        """images.judge on the image of every enabled service (validate, doctor). Without a model
        compose resolves one, which needs the docker CLI but no daemon."""
        if model is None:
            if shutil.which("docker") is None:
                return [warning("docker", "images not checked: the docker CLI is not on PATH",
                                "install Docker, or set KITTY_COMPOSE_ENABLED=false", Runbook.DOCKER)]
            missing = self._missing_files()
            if missing:
                return missing
            try:
                model = self.model()
            except ComposeError as exc:
                return [exc.problem]
        resolved = {name: service.image for name, service in model.services.items()}
        files = [str(p) for p in self.settings.files]
        if not images.problems(resolved, {}, files):
            return []
        return images.problems(resolved, self.image_sources(), files)  # now naming the variables

    def missing_images(self, model: StackModel, services: Iterable[str]) -> dict[str, list[str]]:
        """image -> the services among `services` that run it, for each image `docker image
        inspect` does not find here. Services whose compose pull_policy is never or build are
        left to compose. From the engine, one request per image; from the CLI, one inspect of them
        all, and only when one is missing, one per image."""
        wanted: dict[str, list[str]] = {}
        for name in services:
            service = model.services.get(name)
            if service is not None and service.image and service.pull_policy not in ("never", "build"):
                wanted.setdefault(service.image, []).append(name)
        if not wanted:
            return {}
        if self.engine is not None:
            try:
                return {image: names for image, names in wanted.items() if not self.engine.has_image(image, QUICK)}
            except engines.EngineError:
                pass  # the CLI says the same, with its own words
        if self.run(["docker", "image", "inspect", "--format", "{{.Id}}", *wanted], QUICK).code == 0:
            return {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(wanted))) as pool:
            found = dict(zip(wanted, pool.map(
                lambda image: self.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], QUICK).code == 0,
                wanted)))
        return {image: names for image, names in wanted.items() if not found[image]}

    def pull(self, wanted: Mapping[str, list[str]], progress: Progress,
             timeout: float = PULL_TIMEOUT) -> list[Problem]:
        """`docker pull` every image of `wanted` (image -> services) at once, each with its own
        deadline; one progress event per image. Returns a Problem per image that did not come,
        naming its services, the image and the registry's own last words. An interrupt kills
        the pulls still running (our own children) and propagates."""
        running: dict[str, tuple[subprocess.Popen | None, object]] = {}
        try:
            for image, names in wanted.items():
                progress.event(names[0], f"pulling {image} for {', '.join(names)}")
                err = tempfile.TemporaryFile("w+")  # a file, not a pipe: nothing to drain meanwhile
                try:
                    proc = subprocess.Popen(["docker", "pull", "--quiet", image], stdout=subprocess.DEVNULL,
                                            stderr=err, stdin=subprocess.DEVNULL, env=self.environment())
                except OSError as exc:
                    proc = None
                    err.write(f"docker: {exc.strerror or exc}")
                running[image] = (proc, err)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(p is not None and p.poll() is None for p, _ in running.values()):
                time.sleep(0.1)
            failed: dict[str, str] = {}
            for image, (proc, err) in running.items():
                if proc is not None and proc.poll() is None:
                    failed[image] = f"`docker pull {image}` did not finish within {timeout:g}s"
                elif proc is None or proc.returncode != 0:
                    err.seek(0)
                    failed[image] = _last_line(err.read())
        finally:
            for proc, err in running.values():
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
                err.close()
        if not failed:
            return []
        sources, files = self.image_sources(), [str(p) for p in self.settings.files]
        return [images.pull_problem(image, wanted[image], why,
                                    images.where(wanted[image][0], sources.get(wanted[image][0], ""), files))
                for image, why in failed.items()]

    def pull_missing(self, model: StackModel, services: Iterable[str], progress: Progress) -> list[Problem]:
        """Before a start: pull what `services` need and this machine lacks (a local image is
        never pulled); the Problems of the pulls that failed."""
        missing = self.missing_images(model, services)
        return self.pull(missing, progress) if missing else []

    # --- lifecycle

    def create(self, services: list[str], timeout: float) -> Completed:
        """Networks, volumes and containers for `services` (pulling missing images), none started.
        Containers already running with the same configuration are left as they are."""
        return self.compose("up", "--no-start", "--no-build", *services, timeout=timeout)

    def up(self, service: str, timeout: float) -> Completed:
        """Start one service's container. One that compose has just created is started by its
        id (the same engine call compose makes, without loading the project again: on a busy
        machine that saves most of a second per service); otherwise `compose up` it, --no-deps
        since kitty-ops's own graph has already waited for the dependencies."""
        if service in self.ids:
            started = self._by_engine(lambda e: e.start(self.ids[service], timeout)) or \
                self.run(["docker", "start", self.ids[service]], timeout)
            if started.code == 0:
                return started
        return self.compose("up", "--detach", "--no-deps", "--no-build", "--no-recreate", service,
                            timeout=timeout)

    def _by_engine(self, call) -> Completed | None:
        """`call(engine)` as a Completed; None when there is no engine client (use the CLI)."""
        if self.engine is None:
            return None
        try:
            call(self.engine)
        except engines.EngineError as exc:
            return Completed(1, "", str(exc))
        return Completed(0, "", "")

    def _engine_containers(self, timeout: float, one_off: bool = False) -> list[dict]:
        """The project's containers, from the engine; one-off `compose run` containers only
        with `one_off` (a `down` removes them too, as compose's does)."""
        assert self.engine is not None
        try:
            found = self.engine.project_containers(self.project, timeout)
        except engines.EngineError as exc:
            raise ComposeError(error("docker daemon", f"the Docker engine does not answer: {exc}",
                                     ENGINE_HINT, Runbook.DOCKER)) from None
        return [c for c in found if one_off or (c.get("Labels") or {}).get("com.docker.compose.oneoff") != "True"]

    def container_ids(self) -> dict[str, str]:
        if self.engine is not None:
            self.ids = {str((c.get("Labels") or {}).get(SERVICE_LABEL, "")): str(c.get("Id", ""))[:12]
                        for c in sorted(self._engine_containers(QUICK), key=lambda c: c.get("Created", 0))}
            self.ids.pop("", None)
            return dict(self.ids)
        result = self.compose("ps", "--all", "--format", "json")
        if result.code != 0:
            raise ComposeError(error("docker compose ps", _last_line(result.err),
                                     f"check the Docker daemon ({ENGINE_HINT})", Runbook.DOCKER))
        self.ids = parse_ps_ids(result.out)
        return dict(self.ids)

    def inspect(self, ids: Iterable[str]) -> dict[str, ContainerState]:
        ids = list(ids)
        if not ids:
            return {}
        if self.engine is not None:
            try:
                found = [self.engine.inspect(i, QUICK) for i in ids]
            except engines.EngineError:
                return {}
            return parse_inspect([f for f in found if f is not None], self.project)
        result = self.run(["docker", "inspect", *ids], QUICK)
        # A container removed meanwhile makes inspect exit 1 but still print the others.
        try:
            return parse_inspect(json.loads(result.out or "[]"), self.project)
        except ValueError:
            return {}

    def states(self) -> dict[str, ContainerState]:
        return self.inspect(self.container_ids().values())

    def project_states(self, timeout: float, memory: bool = False) -> dict[str, ContainerState]:
        """Every container of the project, straight from the engine by its project label: two
        quick `docker` calls, without loading the compose project (the health check's path).
        With `memory`, each running container's memory_bytes too, where the engine says.
        Raises ComposeError when the engine cannot be asked."""
        if self.engine is not None:
            return self._engine_states(timeout, memory)
        listed = self.run(["docker", "ps", "--all", "--quiet", "--no-trunc", "--filter",
                           f"label={PROJECT_LABEL}={self.project}"], timeout)
        if listed.code != 0:
            raise ComposeError(error("docker daemon", f"the Docker engine does not answer: {_last_line(listed.err)}",
                                     ENGINE_HINT, Runbook.DOCKER))
        ids = listed.out.split()
        if not ids:
            return {}
        result = self.run(["docker", "inspect", *ids], timeout)
        try:
            return parse_inspect(json.loads(result.out or "[]"), self.project)
        except ValueError:
            raise ComposeError(error("docker inspect", _last_line(result.err), ENGINE_HINT, Runbook.DOCKER)) from None

    def _engine_states(self, timeout: float, memory: bool) -> dict[str, ContainerState]:
        assert self.engine is not None
        deadline = time.monotonic() + timeout
        ids = [str(c.get("Id", "")) for c in self._engine_containers(timeout)]

        def one(container_id: str) -> dict | None:
            left = max(0.05, deadline - time.monotonic())
            found = self.engine.inspect(container_id, left)
            if found is not None and memory and (found.get("State") or {}).get("Running"):
                found["kitty_memory_bytes"] = self.engine.memory_bytes(container_id, left)
            return found

        try:
            if len(ids) <= 1:
                found = [one(i) for i in ids]
            else:  # stats take the engine a few ms each: asked at once
                with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(ids))) as pool:
                    found = list(pool.map(one, ids))
        except engines.EngineError as exc:
            raise ComposeError(error("docker inspect", str(exc), ENGINE_HINT, Runbook.DOCKER)) from None
        items = [f for f in found if f is not None]
        states = parse_inspect(items, self.project)
        for item in items:
            service = ((item.get("Config") or {}).get("Labels") or {}).get(SERVICE_LABEL, "")
            if service in states and item.get("kitty_memory_bytes") is not None:
                states[service] = dataclasses.replace(states[service], memory_bytes=item["kitty_memory_bytes"])
        return states

    def events(self) -> subprocess.Popen | None:
        """A stream of the project's container events (start, die, health_status), one JSON
        line each; None when it cannot be started. The caller terminates it."""
        argv = ["docker", "events", "--format", "{{json .}}", "--filter", "type=container",
                "--filter", f"label={PROJECT_LABEL}={self.project}"]
        for event in ("start", "die", "health_status"):
            argv += ["--filter", f"event={event}"]
        try:
            return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    stdin=subprocess.DEVNULL, text=True, env=self.environment())
        except OSError:
            return None

    def logs(self, service: str, lines: int) -> list[str]:
        result = self.compose("logs", "--no-color", "--no-log-prefix", "--tail", str(lines), service)
        return (result.out + result.err).splitlines()[-lines:]

    def stop(self, services: list[str]) -> Completed:
        timeout = self.settings.stop_timeout
        return self.compose("stop", "--timeout", str(timeout), *services, timeout=timeout + QUICK)

    def remove(self, services: list[str]) -> Completed:
        """Stop and remove these services' containers (volumes are kept)."""
        timeout = self.settings.stop_timeout
        if self.engine is not None:
            return self._remove_by_engine(services, timeout + QUICK)
        return self.compose("rm", "--stop", "--force", *services, timeout=timeout + QUICK)

    def _remove_by_engine(self, services: list[str] | None, timeout: float) -> Completed:
        """Stop (the container's own stop signal; SIGKILL after KITTY_COMPOSE_STOP_TIMEOUT) and
        remove the project's containers of `services` (None: every one, orphans included), all
        at once: the caller orders the services."""
        try:
            found = self._engine_containers(QUICK, one_off=services is None)
        except ComposeError as exc:
            return Completed(1, "", exc.problem.message)
        ids = [str(c.get("Id", "")) for c in found
               if services is None or (c.get("Labels") or {}).get(SERVICE_LABEL) in services]

        def stop_and_remove(container_id: str) -> None:
            self.engine.stop(container_id, self.settings.stop_timeout, timeout)
            self.engine.remove(container_id, QUICK)

        errors = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(8, len(ids)))) as pool:
            for future in [pool.submit(stop_and_remove, i) for i in ids]:
                try:
                    future.result()
                except engines.EngineError as exc:
                    errors.append(str(exc))
        for service, container_id in list(self.ids.items()):
            if any(i.startswith(container_id) for i in ids):
                del self.ids[service]
        return Completed(1 if errors else 0, "", "\n".join(errors))

    def down(self) -> Completed:
        """Containers and network of the project removed; named volumes (the data) kept."""
        timeout = self.settings.stop_timeout
        if self.engine is None:
            return self.compose("down", "--remove-orphans", "--timeout", str(timeout), timeout=timeout + 60)
        removed = self._remove_by_engine(None, timeout + 60)
        if removed.code != 0:
            return removed
        try:
            for network in self.engine.project_networks(self.project, QUICK):
                self.engine.remove_network(str(network.get("Id", "")), QUICK)
        except engines.EngineError as exc:
            return Completed(1, "", str(exc))
        return Completed(0, "", "")

    def exec(self, service: str, argv: list[str], timeout: float = QUICK) -> Completed:
        if service in self.ids:  # by id: no second load of the project (see up())
            return self.run(["docker", "exec", self.ids[service], *argv], timeout)
        return self.compose("exec", "-T", service, *argv, timeout=timeout)


def _last_line(text: str) -> str:
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1] if lines else "no output"
