"""The whole stack against a real Docker engine and compose v2: real postgres, redis and
mosquitto containers (the locally built test image swapped in by tests/docker/compose.test.yml),
a brain stand-in that reaches the llama server through host.docker.internal, and fake llama
servers whose load time the tests control."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from tests.harness import REPO, alive, bystander, docker, free_port, wait_until

pytestmark = pytest.mark.docker

FAKE_SERVICE = REPO / "tests" / "fakes" / "fake_service.py"


def started_at(stack, service: str) -> float:
    """When docker started the container (epoch seconds)."""
    text = stack.inspect(service)["State"]["StartedAt"]  # 2026-11-23T14:01:44.123456789Z
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]}+00:00").timestamp()


def brain_saw(stack) -> dict:
    """The stand-in brain logs, at start, whether the llama server already answered /health."""
    logs = stack.compose("logs", "--no-log-prefix", "brain").stdout
    return json.loads(next(l for l in logs.splitlines() if '"event": "started"' in l))


def test_start_follows_the_graph_and_stop_leaves_nothing(stack):
    stack.stack_env({"q4": "--fake-load-seconds 4"})
    began = time.time()
    code, out = stack.json("start", timeout=180)
    assert code == 0, out
    by_name = {c["name"]: c for c in out["components"]}
    assert {n: c["action"] for n, c in by_name.items()} == {
        "q4": "started", "rustfs": "started", "mosquitto": "started", "postgres": "started",
        "redis": "started", "brain": "started"}
    assert {c["name"]: c["ok"] for c in out["checks"]} == {
        "postgres SELECT 1": True, "redis PING": True, "mosquitto MQTT": True, "brain /health": True,
        "published ports": True, "end-to-end": True}

    # Infrastructure did not wait for the model load (4 s); brain waited for the llama server
    # (the cross-tier edge) and for its compose dependencies.
    for infra in ("postgres", "redis", "mosquitto", "rustfs"):
        assert started_at(stack, infra) - began < 3.5, infra
    q4_ready = began + 4.0
    assert started_at(stack, "brain") >= q4_ready - 0.5
    assert brain_saw(stack)["llama_health"] == "200"
    for dependency in ("postgres", "redis", "mosquitto"):
        assert started_at(stack, "brain") > started_at(stack, dependency)

    pid = stack.record("q4")["pid"]
    code, out = stack.json("stop", timeout=120)
    assert code == 0, out
    assert stack.containers() == []  # no container of the project, running or stopped
    assert not alive(pid)
    assert not list(stack.logs.glob("llamacpp-*.pid"))
    volumes = docker("volume", "ls", "--filter", f"label=com.docker.compose.project={stack.compose_project}",
                     "--format", "{{.Name}}").stdout.split()
    assert f"{stack.compose_project}_postgres-data" in volumes  # stop keeps the data


def test_data_survives_stop_all_and_start_all(stack):
    stack.stack_env({"q4": ""}, profiles="")
    assert stack.run("start", timeout=180).returncode == 0
    rows = "".join(f"({i}, 'row-{i}')," for i in range(50)).rstrip(",")
    sql = f"CREATE TABLE kept (id int PRIMARY KEY, note text); INSERT INTO kept VALUES {rows};"
    assert stack.compose("exec", "-T", "postgres", "psql", "-U", "kitty", "-d", "kitty", "-c", sql).returncode == 0
    for i in range(20):
        assert stack.compose("exec", "-T", "redis", "redis-cli", "SET", f"key:{i}", f"value-{i}").stdout.strip() == "OK"

    assert stack.run("stop", timeout=120).returncode == 0
    assert stack.containers() == []
    assert stack.run("start", timeout=180).returncode == 0

    count = stack.compose("exec", "-T", "postgres", "psql", "-U", "kitty", "-d", "kitty", "-tAc",
                          "SELECT count(*), sum(id) FROM kept").stdout.strip()
    assert count == f"50|{sum(range(50))}"
    values = stack.compose("exec", "-T", "redis", "redis-cli", "MGET", *[f"key:{i}" for i in range(20)]).stdout.split()
    assert values == [f"value-{i}" for i in range(20)]


def test_a_service_that_never_turns_healthy_fails_the_start_and_is_rolled_back(stack):
    stack.add_override("services:\n  mosquitto:\n    healthcheck:\n      test: [\"CMD\", \"false\"]\n"
                       "      interval: 500ms\n      retries: 1000\n")
    stack.stack_env({"q4": ""}, profiles="", KITTY_COMPOSE_TIMEOUT=5)
    began = time.monotonic()
    done = stack.run("start", timeout=180)
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - began < 40  # the 5 s deadline, plus roll-back; not the 60 s default
    assert "mosquitto failed: not healthy after" in done.stderr
    assert "KITTY_COMPOSE_TIMEOUT is 5s" in done.stderr
    assert "last lines of its log" in done.stderr
    assert "last healthcheck: exit 1" in done.stderr  # why it is not healthy
    assert "runbook: ops/runbooks/container-failed.md" in done.stderr
    assert stack.containers(all_states=False) == []  # nothing half-started
    assert not list(stack.logs.glob("llamacpp-*.pid"))


def test_a_container_that_exits_during_start_fails_at_once_with_its_logs(stack):
    stack.add_override("services:\n  redis:\n    entrypoint: [\"sh\", \"-c\", "
                       "\"echo redis-config-is-broken >&2; sleep 1; exit 3\"]\n")
    stack.stack_env({"q4": "--fake-load-seconds 20"}, profiles="", LLAMACPP_HEALTH_TIMEOUT=60)
    began = time.monotonic()
    done = stack.run("start", timeout=180)
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - began < 18  # failed fast: did not wait for q4's 20 s load
    assert "redis failed:" in done.stderr
    assert "code 3" in done.stderr
    assert "redis-config-is-broken" in done.stderr  # its last log lines
    assert stack.containers(all_states=False) == []
    assert not list(stack.logs.glob("llamacpp-*.pid"))


def test_interrupt_during_start_leaves_nothing_half_started(stack):
    stack.stack_env({"q4": "--fake-load-seconds 30"}, LLAMACPP_HEALTH_TIMEOUT=60)
    proc = stack.popen("start")
    assert wait_until(lambda: len(stack.containers(all_states=False)) >= 4, 60, 0.2)
    assert wait_until(lambda: (stack.logs / "llamacpp-q4.pid").exists(), 10)
    pid = stack.record("q4")["pid"]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert stack.containers(all_states=False) == []
    assert wait_until(lambda: not alive(pid), 5)


def test_only_the_configured_compose_project_is_touched(stack):
    stack.stack_env({"q4": ""}, profiles="")
    with bystander(stack) as name:
        assert stack.run("start", timeout=180).returncode == 0
        assert stack.run("stop", timeout=120).returncode == 0
        assert docker("inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true"




def test_native_images_service_waits_for_redis_and_stops_before_it(stack, tmp_path):
    events = tmp_path / "events.log"
    api_port = free_port()
    py = sys.executable
    stack.stack_env(
        {"q4": ""}, profiles="", IMAGES_SERVICE_ENABLED="true", IMAGES_SERVICE_PORT=api_port,
        IMAGES_SERVICE_WORKER_CMD=f'"{py} {FAKE_SERVICE} --name worker --events {events}"',
        IMAGES_SERVICE_API_CMD=f'"{py} {FAKE_SERVICE} --name api --port {{port}} --events {events}"',
        IMAGES_SERVICE_WORKER_SETTLE="0.5")
    code, out = stack.json("start", timeout=180)
    assert code == 0, out
    assert ["llama:q4", "compose:mosquitto", "compose:postgres", "compose:redis", "compose:rustfs"] == out["plan"][0]
    assert out["plan"][1:] == [["native:images-worker"], ["native:images-api"]]
    lines = [l.split() for l in events.read_text().splitlines()]
    assert [l[:2] for l in lines] == [["started", "worker"], ["started", "api"]]
    assert float(lines[0][2]) > started_at(stack, "redis")
    assert (stack.logs / "service-images-api.pid").exists()

    code, out = stack.json("stop", timeout=120)
    assert code == 0, out
    stops = [l.split()[:2] for l in events.read_text().splitlines() if l.startswith("stopping")]
    assert stops == [["stopping", "api"], ["stopping", "worker"]]  # the API before its worker
    assert not list(stack.logs.glob("service-*.pid"))


def test_docker_unavailable_is_reported_before_anything_starts(stack):
    stack.stack_env({"q4": ""})
    env = {**stack.env(), "DOCKER_HOST": f"unix://{stack.root}/no-such-docker.sock"}
    done = subprocess.run(stack.argv("start"), cwd=stack.root, env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 5, done.stderr
    assert "Docker daemon is not reachable" in done.stderr
    assert "ops/runbooks/docker-engine.md" in done.stderr
    assert not list(stack.logs.glob("llamacpp-*.pid"))


@pytest.mark.real_engine
def test_real_llama_server_answers_through_brain_end_to_end(stack):
    """The real llama-server and the real Gemma model behind the brain stand-in: start-all's
    end-to-end query goes to brain's /api/query (KITTY_E2E_URL), which reaches q4 through
    host.docker.internal. The whole path an operator's query takes."""
    from tests.harness import real_engine, real_model
    model = real_model()
    ports = stack.stack_env({"q4": ""}, LLAMACPP_SERVER_BIN=real_engine(), LLAMACPP_MODELS_DIR=model.parent,
                            LLAMACPP_Q4_MODEL=model.name, LLAMACPP_CTX=1024, LLAMACPP_PARALLEL=1,
                            LLAMACPP_BATCH=256, LLAMACPP_UBATCH=128, LLAMACPP_HEALTH_TIMEOUT=240,
                            KITTY_E2E_TIMEOUT=180)
    with open(stack.env_file, "a") as env:
        env.write(f"KITTY_E2E_URL=http://127.0.0.1:{ports['BRAIN_PORT']}/api/query\n")
    code, out = stack.json("start", timeout=400)
    assert code == 0, out
    e2e = next(c for c in out["checks"] if c["name"] == "end-to-end")
    assert e2e["ok"] and e2e["url"].endswith("/api/query"), e2e
    assert brain_saw(stack)["llama_health"] == "200"
    assert stack.run("stop", timeout=120).returncode == 0
    assert stack.containers() == []


def test_health_sees_every_container_and_a_container_stopped_behind_its_back(stack):
    stack.stack_env({"q4": ""})
    with bystander(stack) as other:
        assert stack.run("start", timeout=180).returncode == 0
        done = stack.run("health", "--json", timeout=60)
        report = json.loads(done.stdout)
        parts = {c["name"]: c for c in report["components"]}
        assert done.returncode == 0, report
        assert set(parts) == {"q4", "postgres", "redis", "mosquitto", "rustfs", "brain"}  # no bystander
        assert all(c["level"] == "OK" for c in parts.values()), report
        assert parts["brain"]["dependencies"] == {"mosquitto": "healthy", "postgres": "healthy",
                                                  "q4": "healthy", "redis": "healthy"}
        postgres = parts["postgres"]
        assert postgres["version"] == stack.image
        assert postgres["container"] == stack.inspect("postgres")["Id"][:12]
        assert postgres["uptime"] >= 0 and postgres["latency"] is not None  # docker's own probe time
        assert done.stdout and "KITTY" not in done.stdout.splitlines()[0]  # --json is JSON only

        # Stopped outside kitty-ops: health says so, and what depends on it shows it.
        assert docker("stop", "--time", "1", f"{stack.compose_project}-redis-1").returncode == 0
        done = stack.run("health", "--json", timeout=60)
        report = json.loads(done.stdout)
        parts = {c["name"]: c for c in report["components"]}
        assert done.returncode == 2
        assert (parts["redis"]["level"], parts["redis"]["status"]) == ("CRITICAL", "down")
        assert parts["redis"]["detail"].startswith("exited with code")
        assert parts["redis"]["runbook"] == "ops/runbooks/container-failed.md"
        assert parts["brain"]["dependencies"]["redis"] == "down"

        # The engine unreachable: every container is CRITICAL and names the Docker runbook.
        env = {**stack.env(), "DOCKER_HOST": f"unix://{stack.root}/no-such-docker.sock"}
        done = subprocess.run(stack.argv("health"), cwd=stack.root, env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 2
        assert "Docker engine does not answer" in done.stdout
        assert "ops/runbooks/docker-engine.md" in done.stdout
        assert docker("inspect", "--format", "{{.State.Running}}", other).stdout.strip() == "true"


def test_rabbitmq_profile_starts_healthy_with_the_env_files_credentials_and_stop_removes_it(stack):
    from kitty_ops.stack.checks import amqp_connect
    amqp, management = free_port(), free_port()
    stack.stack_env({"q4": ""}, profiles="rabbitmq", RABBITMQ_PORT=amqp, RABBITMQ_MANAGEMENT_PORT=management,
                    RABBITMQ_DEFAULT_PASS="test-only-rabbit", KITTY_COMPOSE_TIMEOUT=150)
    code, out = stack.json("start", timeout=300)
    assert code == 0, out
    assert {c["name"]: c["action"] for c in out["components"]}["rabbitmq"] == "started"
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["rabbitmq AMQP"]["ok"] and checks["rabbitmq AMQP"]["detail"] == "login as kitty accepted", checks
    assert checks["published ports"]["ok"], checks  # 5672 and the management UI's 15672, on the host

    code, health = stack.json("health", timeout=60)
    rabbit = {c["name"]: c for c in health["components"]}["rabbitmq"]
    assert rabbit["status"] == "healthy", rabbit

    # The credentials of the env file, asked of the broker itself, then over AMQP from the host.
    asked = docker("exec", f"{stack.compose_project}-rabbitmq-1", "rabbitmqctl", "authenticate_user", "kitty",
                   "test-only-rabbit")
    assert asked.returncode == 0 and "Success" in asked.stdout, asked.stdout + asked.stderr
    assert amqp_connect("127.0.0.1", amqp, "kitty", "test-only-rabbit") is None
    refused = amqp_connect("127.0.0.1", amqp, "kitty", "not-the-password")
    assert refused is not None and "ACCESS_REFUSED" in refused
    assert stack.inspect("rabbitmq")["Config"]["Hostname"] == "rabbitmq"  # its data directory's name

    code, out = stack.json("stop", timeout=120)
    assert code == 0, out
    assert stack.containers() == []
    volumes = docker("volume", "ls", "--filter", f"label=com.docker.compose.project={stack.compose_project}",
                     "--format", "{{.Name}}").stdout.split()
    assert f"{stack.compose_project}_rabbitmq-data" in volumes  # stop keeps its data


def test_rabbitmq_without_a_password_refuses_to_start_and_names_the_variable(stack):
    stack.stack_env({"q4": ""}, profiles="rabbitmq", RABBITMQ_PORT=free_port(),
                    RABBITMQ_MANAGEMENT_PORT=free_port(), RABBITMQ_DEFAULT_PASS="")
    done = stack.run("start", "--only", "rabbitmq", timeout=180)
    assert done.returncode == 3, done.stderr  # refused by the configuration check, before anything runs
    assert "RABBITMQ_DEFAULT_PASS" in done.stdout + done.stderr
    assert stack.containers() == []
    # Started by hand with compose, the container itself refuses and names the variable.
    done = stack.compose("run", "--rm", "--no-deps", "rabbitmq", timeout=120)
    assert done.returncode == 78, done.stderr
    assert "RABBITMQ_DEFAULT_PASS is empty: set it in the env file" in done.stderr
    # Without the profile nobody needs the password: the stack starts as before.
    stack.stack_env({"q4": ""}, profiles="", RABBITMQ_DEFAULT_PASS="")
    assert stack.run("start", "--only", "redis", timeout=180).returncode == 0
