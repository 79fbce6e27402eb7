"""What start-all checks once everything reports healthy: the data services answer a real
request (postgres SELECT 1, redis PING, an MQTT CONNECT to mosquitto, an AMQP login to rabbitmq
with the env file's credentials), brain's /health, every published port is listening, and one
end-to-end query goes through (a chat completion against q4, or brain's /api/query when
KITTY_E2E_URL names it). All run at once, each with a deadline."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import socket
import time
from typing import Callable

from kitty_ops.config import Settings
from kitty_ops.containers.compose import Compose, StackModel
from kitty_ops.host import ports, probes
from kitty_ops.outcomes import Progress
from kitty_ops.runbooks import Runbook
from kitty_ops.stack.graph import Graph, Tier

CHECK_TIMEOUT = 10.0
E2E_PROMPT = "Reply with one word: ready?"


@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0
    url: str = ""
    runbook: Runbook | None = None

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["runbook"] = self.runbook.path if self.runbook else None
        return data


def service_check(service: str, compose: Compose, model: Callable[[], StackModel]) -> Callable[[], Check] | None:
    """The check of one data service, run as soon as that service is healthy (while the rest
    of the stack is still starting), or None when the service has none. `model` gives the full
    model when the check runs (it may still be resolving when the service turns healthy)."""
    checks = {"postgres": lambda: _postgres(compose, model()), "redis": lambda: _redis(compose),
              "mosquitto": lambda: _mqtt(model()), "rabbitmq": lambda: _amqp(model()),
              "brain": lambda: _brain(model())}
    return checks.get(service)


def final_checks(settings: Settings, plan: Graph, model: StackModel | None) -> list[Callable[[], Check]]:
    """What can only be checked once everything runs: the published ports and the end-to-end query."""
    jobs: list[Callable[[], Check]] = []
    if model is not None and plan.of_tier(Tier.COMPOSE):
        jobs.append(lambda: _ports(plan, model))
    jobs.append(lambda: end_to_end(settings, plan))
    return jobs


def run(jobs: list[Callable[[], Check]]) -> list[Check]:
    """Run checks at once, each timed; a check that crashes is a failed check."""
    if not jobs:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(timed, jobs))


def report(results: list[Check], progress: Progress) -> None:
    for check in results:
        progress.event("check", f"{check.name}: {'ok' if check.ok else 'FAILED'} ({check.detail})")


def timed(job: Callable[[], Check]) -> Check:
    started = time.monotonic()
    try:
        check = job()
    except Exception as exc:  # a check that crashes is a failed check, with the reason
        check = Check("check", False, f"{exc.__class__.__name__}: {exc}", runbook=Runbook.E2E)
    check.seconds = time.monotonic() - started
    return check


def _last_line(text: str) -> str:
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1][:200] if lines else "no output"


def _loopback(host_ip: str) -> str:
    return "127.0.0.1" if host_ip in ("0.0.0.0", "", "::") else host_ip


def _postgres(compose: Compose, model: StackModel) -> Check:
    env = model.services["postgres"].environment
    user, db = env.get("POSTGRES_USER", "postgres"), env.get("POSTGRES_DB", env.get("POSTGRES_USER", "postgres"))
    result = compose.exec("postgres", ["psql", "-U", user, "-d", db, "-tAc", "SELECT 1"], CHECK_TIMEOUT)
    ok = result.code == 0 and result.out.strip() == "1"
    return Check("postgres SELECT 1", ok, "1 row" if ok else _last_line(result.err or result.out),
                 runbook=None if ok else Runbook.CONTAINER_FAILED)


def _redis(compose: Compose) -> Check:
    result = compose.exec("redis", ["redis-cli", "ping"], CHECK_TIMEOUT)
    ok = result.code == 0 and result.out.strip() == "PONG"
    return Check("redis PING", ok, "PONG" if ok else _last_line(result.err or result.out),
                 runbook=None if ok else Runbook.CONTAINER_FAILED)


def mqtt_connect(host: str, port: int, timeout: float = CHECK_TIMEOUT) -> str | None:
    """An MQTT 3.1.1 CONNECT; None when the broker accepts it (CONNACK 0), else why not."""
    client_id = b"kitty-ops-check"
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a"  # protocol name, level 4, clean session, keepalive 10
    payload = len(client_id).to_bytes(2, "big") + client_id
    packet = b"\x10" + bytes([len(variable) + len(payload)]) + variable + payload
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(packet)
        reply = sock.recv(4)
        sock.sendall(b"\xe0\x00")  # DISCONNECT
    if len(reply) == 4 and reply[0] == 0x20 and reply[3] == 0:
        return None
    return f"unexpected reply {reply.hex() or '(none)'}"


def _mqtt(model: StackModel) -> Check:
    published = model.services["mosquitto"].ports
    if not published:
        return Check("mosquitto MQTT", True, "no published port; not checked from the host")
    host, port = _loopback(published[0].host_ip), published[0].published
    try:
        problem = mqtt_connect(host, port)
    except OSError as exc:
        problem = str(exc) or exc.__class__.__name__
    return Check("mosquitto MQTT", problem is None, "CONNACK accepted" if problem is None else problem,
                 url=f"mqtt://{host}:{port}", runbook=None if problem is None else Runbook.CONTAINER_FAILED)


AMQP_HEADER = b"AMQP\x00\x00\x09\x01"  # AMQP 0-9-1
_FRAME_END = 0xCE


def _short(text: str) -> bytes:
    data = text.encode()
    return bytes([len(data)]) + data


def _long(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _method(class_id: int, method_id: int, arguments: bytes) -> bytes:
    payload = class_id.to_bytes(2, "big") + method_id.to_bytes(2, "big") + arguments
    return b"\x01\x00\x00" + _long(payload) + bytes([_FRAME_END])  # a method frame on channel 0


def _read_method(sock: socket.socket) -> tuple[tuple[int, int], bytes]:
    """The next method frame on channel 0 -> ((class, method), arguments); heartbeats skipped."""
    while True:
        header = _read_exactly(sock, 7)
        body = _read_exactly(sock, int.from_bytes(header[3:7], "big") + 1)
        if header[0] == 1:
            return (int.from_bytes(body[0:2], "big"), int.from_bytes(body[2:4], "big")), body[4:-1]
        if header[0] != 8:  # 8: heartbeat
            raise ValueError(f"unexpected AMQP frame type {header[0]}")


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def _close_reason(arguments: bytes) -> str:
    code = int.from_bytes(arguments[0:2], "big")
    text = arguments[3:3 + arguments[2]].decode(errors="replace")
    return f"{code} {text}"


def amqp_connect(host: str, port: int, user: str, password: str, vhost: str = "/",
                 timeout: float = CHECK_TIMEOUT) -> str | None:
    """An AMQP 0-9-1 login (PLAIN) and Connection.Open of `vhost`; None when the broker accepts
    both, else why not (the broker's own reply: `403 ACCESS_REFUSED - Login was refused ...`).
    The password goes to the broker only; it is never part of the answer."""
    # authentication_failure_close: a refused login is answered with Connection.Close and a
    # reason, not a silently closed socket.
    capabilities = _short("authentication_failure_close") + b"t\x01"
    properties = (_short("product") + b"S" + _long(b"kitty-ops check")
                  + _short("capabilities") + b"F" + _long(capabilities))
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(AMQP_HEADER)
        method, _ = _read_method(sock)
        if method != (10, 10):  # Connection.Start
            return f"not an AMQP 0-9-1 broker (first method {method})"
        response = b"\x00" + user.encode() + b"\x00" + password.encode()
        sock.sendall(_method(10, 11, _long(properties) + _short("PLAIN") + _long(response) + _short("en_US")))
        method, arguments = _read_method(sock)
        if method == (10, 50):  # Connection.Close
            return _close_reason(arguments)
        if method != (10, 30):  # Connection.Tune
            return f"unexpected AMQP method {method} after login"
        sock.sendall(_method(10, 31, arguments[0:2] + arguments[2:6] + b"\x00\x00"))  # Tune-Ok, no heartbeats
        sock.sendall(_method(10, 40, _short(vhost) + _short("") + b"\x00"))  # Connection.Open
        method, arguments = _read_method(sock)
        if method == (10, 50):
            return _close_reason(arguments)
        if method != (10, 41):  # Open-Ok
            return f"unexpected AMQP method {method} after Connection.Open"
        sock.sendall(_method(10, 50, b"\x00\xc8" + _short("kitty-ops check done") + b"\x00\x00\x00\x00"))
        try:
            _read_method(sock)  # Close-Ok; the broker may also just close
        except (OSError, ValueError):
            pass
    return None


def _amqp(model: StackModel) -> Check:
    service = model.services["rabbitmq"]
    published = [p for p in service.ports if p.target == 5672]
    if not published:
        return Check("rabbitmq AMQP", True, "no published AMQP port; not checked from the host")
    host, port = _loopback(published[0].host_ip), published[0].published
    user = service.environment.get("RABBITMQ_DEFAULT_USER", "guest")
    try:
        problem = amqp_connect(host, port, user, service.environment.get("RABBITMQ_DEFAULT_PASS", ""))
    except (OSError, ValueError) as exc:
        problem = str(exc) or exc.__class__.__name__
    detail = f"login as {user} accepted" if problem is None else problem
    if problem is not None and "ACCESS_REFUSED" in problem:
        detail += (f"; RABBITMQ_DEFAULT_USER/RABBITMQ_DEFAULT_PASS only apply when the volume is first "
                   f"initialised: set them back, or change the password inside (rabbitmqctl change_password {user})")
    return Check("rabbitmq AMQP", problem is None, detail, url=f"amqp://{host}:{port}",
                 runbook=None if problem is None else Runbook.CONTAINER_FAILED)


def _brain(model: StackModel) -> Check:
    published = model.services["brain"].ports
    if not published:
        return Check("brain /health", True, "no published port; not checked from the host")
    url = f"http://{_loopback(published[0].host_ip)}:{published[0].published}"
    result = probes.probe_health(url, timeout=CHECK_TIMEOUT)
    ok = result.health is probes.Health.READY
    return Check("brain /health", ok, result.detail, url=url + "/health",
                 runbook=None if ok else Runbook.E2E)


def _ports(plan: Graph, model: StackModel) -> Check:
    """Listening means accepting a connection (on 127.0.0.1 for a port published on every
    address): on macOS a bind test beside Docker Desktop's forwarder succeeds although it listens."""
    closed = []
    count = 0
    for node in plan.of_tier(Tier.COMPOSE):
        for port in model.services[node.name].ports:
            count += 1
            if not ports.accepts(_loopback(port.host_ip), port.published):
                closed.append(f"{node.name}:{port.published}")
    ok = not closed
    return Check("published ports", ok, f"{count} listening" if ok else f"not listening: {', '.join(closed)}",
                 runbook=None if ok else Runbook.PORT_CONFLICT)


def end_to_end(settings: Settings, plan: Graph) -> Check:
    """KITTY_E2E_URL (brain's /api/query) when set, else a chat completion against q4 (or the
    first llama server of the plan)."""
    headers = {"Content-Type": "application/json"}
    if settings.e2e_url:
        body = json.dumps({"query": E2E_PROMPT}).encode()
        url = settings.e2e_url
    else:
        names = [n.name for n in plan.of_tier(Tier.LLAMA)]
        if not names:
            return Check("end-to-end", True, "no llama server in this start; skipped")
        spec = settings.server("q4" if "q4" in names else names[0])
        url = spec.url + "/v1/chat/completions"
        headers.update(spec.auth)
        body = json.dumps({"model": spec.alias, "max_tokens": 8,
                           "messages": [{"role": "user", "content": E2E_PROMPT}]}).encode()
    try:
        code, data = probes.http_request(url, "POST", body, settings.e2e_timeout, headers)
        answer = json.loads(data) if code == 200 else None
    except (OSError, ValueError) as exc:
        code, answer, data = None, None, str(exc).encode()
    ok = isinstance(answer, dict)
    detail = f"HTTP 200 from {url}" if ok else f"HTTP {code}: {data[:200].decode(errors='replace')}"
    return Check("end-to-end", ok, detail, url=url, runbook=None if ok else Runbook.E2E)
