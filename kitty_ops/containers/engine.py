"""The Docker Engine API, asked directly over the engine's own socket.

Every `docker` CLI call costs a process start, a Go runtime and a fresh connection: 50-300 ms
on a small or busy machine, which is most of what a health check, a status or the start of an
already-created container takes. The engine answers the same questions over its socket in a
millisecond or two. So the calls that only read or change the state of existing containers
(list, inspect, memory, start, stop, remove, the project's networks) go here; loading the compose
project (config, create, logs, exec) stays with the `docker compose` CLI, which owns that logic.

Where the engine is depends on the same things the CLI reads, in the same order: DOCKER_HOST,
then DOCKER_CONTEXT, then the current context of the CLI config (DOCKER_CONFIG, ~/.docker), then
/var/run/docker.sock (Docker Desktop on macOS keeps its context, `desktop-linux`, in the config;
Colima, OrbStack and Podman likewise). Only plain unix sockets and tcp without TLS are spoken
here; an ssh:// or TLS endpoint resolves to None and the callers use the CLI for everything.

Requests use the unversioned paths, which the engine serves at its own API version, and send no
body but what a call needs. Nothing here is shell: every request is a fixed path plus values
that are URL-quoted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import socket
from pathlib import Path
from typing import Mapping
from urllib.parse import quote, urlencode, urlsplit

DEFAULT_SOCKET = "/var/run/docker.sock"
PROJECT_LABEL = "com.docker.compose.project"


class EngineError(Exception):
    """The engine could not be asked (no socket, refused, timed out) or answered an error."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Address:
    unix_path: str | None = None  # a unix socket, or
    host: str | None = None  # a tcp host and port (no TLS)
    port: int | None = None

    def __str__(self) -> str:
        return f"unix://{self.unix_path}" if self.unix_path else f"tcp://{self.host}:{self.port}"


# ------------------------------------------------------------------------- where the engine is

def resolve(environ: Mapping[str, str], home: Path | None = None) -> Address | None:
    """The engine's address as the docker CLI would find it; None when it is one this client
    does not speak (ssh://, TLS, a context it cannot read): then the CLI is used instead."""
    host = environ.get("DOCKER_HOST", "").strip()
    if host:
        return _from_host(host, tls=bool(environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH")))
    config_dir = Path(environ["DOCKER_CONFIG"]) if environ.get("DOCKER_CONFIG") else (home or Path.home()) / ".docker"
    context = environ.get("DOCKER_CONTEXT", "").strip() or _current_context(config_dir)
    if not context or context == "default":
        return Address(unix_path=DEFAULT_SOCKET)
    digest = hashlib.sha256(context.encode()).hexdigest()
    if (config_dir / "contexts" / "tls" / digest).exists():
        return None
    try:
        meta = json.loads((config_dir / "contexts" / "meta" / digest / "meta.json").read_text())
        endpoint = meta["Endpoints"]["docker"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return _from_host(str(endpoint.get("Host", "")), tls=False)  # a context with TLS has its tls/ folder


def _current_context(config_dir: Path) -> str:
    try:
        return str(json.loads((config_dir / "config.json").read_text()).get("currentContext") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def _from_host(host: str, tls: bool) -> Address | None:
    parts = urlsplit(host)
    if parts.scheme == "unix" and parts.path:
        return Address(unix_path=parts.path)
    if parts.scheme == "tcp" and parts.hostname and not tls:
        return Address(host=parts.hostname, port=parts.port or 2375)
    return None


# ---------------------------------------------------------------------------------- requests

class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Engine:
    def __init__(self, address: Address):
        self.address = address

    def request(self, method: str, path: str, query: Mapping[str, object] | None = None,
                timeout: float = 5.0) -> tuple[int, bytes]:
        """One request on its own connection (threads may call at once). Raises EngineError
        when the engine cannot be reached or does not answer within `timeout`."""
        target = path + ("?" + urlencode({k: v for k, v in query.items() if v is not None}) if query else "")
        if self.address.unix_path:
            conn: http.client.HTTPConnection = _UnixConnection(self.address.unix_path, timeout)
        else:
            conn = http.client.HTTPConnection(self.address.host, self.address.port, timeout=timeout)
        try:
            conn.request(method, target, headers={"Host": "docker"})
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            reason = "no answer in time" if isinstance(exc, (socket.timeout, TimeoutError)) else (
                getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__)
            raise EngineError(f"cannot reach the Docker engine at {self.address}: {reason}") from None
        finally:
            conn.close()

    def _json(self, path: str, query: Mapping[str, object] | None = None, timeout: float = 5.0) -> object:
        status, body = self.request("GET", path, query, timeout)
        if status != 200:
            raise EngineError(f"GET {path}: HTTP {status}: {_message(body)}", status)
        try:
            return json.loads(body)
        except ValueError:
            raise EngineError(f"GET {path}: the engine's answer is not JSON") from None

    # --- reading

    def version(self, timeout: float = 5.0) -> str:
        found = self._json("/version", timeout=timeout)
        return str(found.get("Version", "")) if isinstance(found, dict) else ""

    def project_containers(self, project: str, timeout: float = 5.0) -> list[dict]:
        """Every container (running or not) labelled as the compose project's: the engine's
        summaries, each with Id, Labels, State."""
        filters = json.dumps({"label": [f"{PROJECT_LABEL}={project}"]})
        found = self._json("/containers/json", {"all": 1, "filters": filters}, timeout)
        return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []

    def inspect(self, container_id: str, timeout: float = 5.0) -> dict | None:
        """What `docker inspect` prints for one container; None when it no longer exists."""
        try:
            found = self._json(f"/containers/{quote(container_id)}/json", timeout=timeout)
        except EngineError as exc:
            if exc.status == 404:
                return None
            raise
        return found if isinstance(found, dict) else None

    def memory_bytes(self, container_id: str, timeout: float = 5.0) -> int | None:
        """Memory in use as `docker stats` counts it (usage less the inactive page cache); None
        when the engine gives no figure (a stopped container, a platform without stats)."""
        try:
            found = self._json(f"/containers/{quote(container_id)}/stats",
                               {"stream": "false", "one-shot": "true"}, timeout)
        except EngineError as exc:
            if exc.status is not None:
                return None
            raise
        return memory_in_use(found.get("memory_stats") if isinstance(found, dict) else None)

    def has_image(self, reference: str, timeout: float = 5.0) -> bool:
        """Whether `docker image inspect REFERENCE` would find it here."""
        status, body = self.request("GET", f"/images/{quote(reference, safe='/:@')}/json", None, timeout)
        if status in (200, 404):
            return status == 200
        raise EngineError(f"image {reference}: HTTP {status}: {_message(body)}", status)

    def project_networks(self, project: str, timeout: float = 5.0) -> list[dict]:
        filters = json.dumps({"label": [f"{PROJECT_LABEL}={project}"]})
        found = self._json("/networks", {"filters": filters}, timeout)
        return [n for n in found if isinstance(n, dict)] if isinstance(found, list) else []

    # --- changing (only ever called with ids of the project's own containers)

    def start(self, container_id: str, timeout: float = 30.0) -> None:
        self._change("POST", f"/containers/{quote(container_id)}/start", None, timeout)

    def stop(self, container_id: str, grace: float | None, timeout: float) -> None:
        """SIGTERM (the container's stop signal), then SIGKILL after `grace` seconds (None: the
        container's own stop_grace_period, as compose set it)."""
        self._change("POST", f"/containers/{quote(container_id)}/stop",
                     None if grace is None else {"t": int(grace)}, timeout)

    def remove(self, container_id: str, timeout: float = 30.0) -> None:
        """Remove a stopped container (its anonymous volumes stay, as with `compose rm`)."""
        self._change("DELETE", f"/containers/{quote(container_id)}", None, timeout)

    def remove_network(self, network_id: str, timeout: float = 30.0) -> None:
        self._change("DELETE", f"/networks/{quote(network_id)}", None, timeout)

    def _change(self, method: str, path: str, query: Mapping[str, object] | None, timeout: float) -> None:
        status, body = self.request(method, path, query, timeout)
        # 304: already in that state; 404: already gone. Both are the outcome asked for.
        if status not in (200, 201, 204, 304, 404):
            raise EngineError(_message(body) or f"HTTP {status}", status)


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", "")).strip()
    except (ValueError, AttributeError):
        return body.decode(errors="replace").strip()[:300]


def memory_in_use(stats: object) -> int | None:
    """The engine's memory_stats -> bytes in use, computed as the docker CLI does: usage less
    inactive_file (cgroup v2) or total_inactive_file (cgroup v1)."""
    if not isinstance(stats, Mapping) or not isinstance(stats.get("usage"), int):
        return None
    detail = stats.get("stats") if isinstance(stats.get("stats"), Mapping) else {}
    for key in ("inactive_file", "total_inactive_file"):
        value = detail.get(key)
        if isinstance(value, int) and value < stats["usage"]:
            return stats["usage"] - value
    return stats["usage"]


def connect(environ: Mapping[str, str] | None = None) -> Engine | None:
    """The engine client for this environment; None when only the CLI can reach the engine."""
    address = resolve(os.environ if environ is None else environ)
    return Engine(address) if address else None
