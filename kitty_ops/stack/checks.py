"""What start-all checks once everything reports healthy: the data services answer a real
request (postgres SELECT 1, redis PING, an MQTT CONNECT to mosquitto), brain's /health, every
published port is listening, and one end-to-end query goes through (a chat completion against q4,
or brain's /api/query when KITTY_E2E_URL names it). All run at once, each with a deadline."""

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


def service_check(service: str, compose: Compose, model: StackModel) -> Callable[[], Check] | None:
    """The check of one data service, run as soon as that service is healthy (while the rest
    of the stack is still starting), or None when the service has none."""
    checks = {"postgres": lambda: _postgres(compose, model), "redis": lambda: _redis(compose),
              "mosquitto": lambda: _mqtt(model), "brain": lambda: _brain(model)}
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
    if settings.e2e_url:
        body = json.dumps({"query": E2E_PROMPT}).encode()
        url = settings.e2e_url
    else:
        names = [n.name for n in plan.of_tier(Tier.LLAMA)]
        if not names:
            return Check("end-to-end", True, "no llama server in this start; skipped")
        spec = settings.server("q4" if "q4" in names else names[0])
        url = spec.url + "/v1/chat/completions"
        body = json.dumps({"model": spec.alias, "max_tokens": 8,
                           "messages": [{"role": "user", "content": E2E_PROMPT}]}).encode()
    try:
        code, data = probes.http_request(url, "POST", body, settings.e2e_timeout,
                                         {"Content-Type": "application/json"})
        answer = json.loads(data) if code == 200 else None
    except (OSError, ValueError) as exc:
        code, answer, data = None, None, str(exc).encode()
    ok = isinstance(answer, dict)
    detail = f"HTTP 200 from {url}" if ok else f"HTTP {code}: {data[:200].decode(errors='replace')}"
    return Check("end-to-end", ok, detail, url=url, runbook=None if ok else Runbook.E2E)
