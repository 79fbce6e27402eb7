"""`kitty-ops status` as an operator types it, against real parts: fake llama servers started by
kitty-ops, the compose tier on the real Docker engine. One table of every component (llama,
native, compose), the disabled ones included; versioned JSON; and it only reads: a server killed
behind kitty-ops's back reads `down` and its record is still there afterwards."""

from __future__ import annotations

import os
import signal
import time

import pytest

from kitty_ops.exitcodes import Exit
from tests.harness import alive, wait_until

COMPOSE_SERVICES = {"postgres": "POSTGRES_PORT", "redis": "REDIS_PORT", "mosquitto": "MQTT_PORT",
                    "rustfs": "OBJECT_STORE_PORT"}  # profiles="" (the object store is always one of two)


def components(project) -> tuple[dict[tuple[str, str], dict], dict]:
    began = time.monotonic()
    code, data = project.json("status", timeout=60)
    took = time.monotonic() - began
    assert code == 0, data
    assert data["schema"] == "kitty-ops/status/v2" and "servers" not in data
    assert took < 10, f"status took {took:.1f}s"
    return {(c["tier"], c["name"]): c for c in data["components"]}, data


@pytest.mark.docker
def test_status_shows_every_tier_and_only_reads(stack):
    ports = stack.stack_env({"q4": "", "f16": ""}, profiles="", LLAMACPP_SERVERS="q4,f16,vision",
                            LLAMACPP_VISION_ENABLED="false")
    code, started = stack.json("start", timeout=180)
    assert code == 0, started
    pids = {c["name"]: c["pid"] for c in started["components"] if c["component"] == "llama"}

    rows, data = components(stack)
    assert list(rows) == [("llama", "q4"), ("llama", "f16"), ("llama", "vision"),
                          ("native", "images-worker"), ("native", "images-api"),
                          *[("compose", s) for s in sorted(COMPOSE_SERVICES)]]
    for name in ("q4", "f16"):
        row = rows["llama", name]
        assert (row["state"], row["health"]) == ("running", "healthy"), row
        assert row["pid"] == pids[name] and row["ports"] == [f"127.0.0.1:{ports[name]}"]
        assert row["memory_bytes"] > 0 and row["uptime"] >= 0 and row["model"].endswith("tiny.gguf")
        assert row["engine"] and row["intent"] == "up" and row["supervised"] is False
    assert (rows["llama", "vision"]["state"], rows["llama", "vision"]["detail"]) == (
        "disabled", "LLAMACPP_VISION_ENABLED=false")
    assert rows["native", "images-api"]["state"] == "disabled"
    for service, port_var in COMPOSE_SERVICES.items():
        row = rows["compose", service]
        inspected = stack.inspect(service)
        assert (row["state"], row["health"]) == ("running", "healthy"), row
        assert row["container"] and inspected["Id"].startswith(row["container"])
        assert any(p.startswith(f"127.0.0.1:{ports[port_var]}->") for p in row["ports"]), row["ports"]
        assert row["model"] == stack.image and row["uptime"] >= 0
        assert row["memory_bytes"] is None or row["memory_bytes"] > 0

    # The table: the header, then one row per component, each with its tier, name, state, health.
    text = stack.run("status", timeout=60)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[:4] == ["TIER", "NAME", "STATE", "HEALTH"]
    assert [tuple(line.split()[:2]) for line in lines[1:]] == list(rows)
    assert lines[1].split()[2:5] == ["running", "healthy", str(pids["q4"])]
    postgres = next(line for line in lines if line.split()[:2] == ["compose", "postgres"])
    assert rows["compose", "postgres"]["container"][:12] in postgres and f":{ports['POSTGRES_PORT']}->" in postgres

    # Read-only: a server killed behind kitty-ops's back reads down, and status removes nothing.
    containers_before = {s: stack.inspect(s)["State"]["StartedAt"] for s in COMPOSE_SERVICES}
    os.kill(pids["f16"], signal.SIGKILL)
    assert wait_until(lambda: not alive(pids["f16"]), 10)
    rows, _ = components(stack)
    f16 = rows["llama", "f16"]
    assert (f16["state"], f16["health"], f16["pid"]) == ("down", "-", pids["f16"]), f16
    assert f"pid {pids['f16']} is gone" in f16["detail"] and f16["runbook"] == "ops/runbooks/llama-server-crash.md"
    assert rows["llama", "q4"]["state"] == "running"
    assert (stack.logs / "llamacpp-f16.pid").exists() and (stack.logs / "llamacpp-f16.json").exists()
    assert {s: stack.inspect(s)["State"]["StartedAt"] for s in COMPOSE_SERVICES} == containers_before
    text = stack.run("status", timeout=60)
    assert "f16: see ops/runbooks/llama-server-crash.md" in text.stdout
    assert (stack.logs / "llamacpp-f16.pid").exists()  # still: only `stop` deals with it


def test_a_disabled_compose_tier_is_one_row_and_stopped_parts_read_as_the_operator_left_them(project):
    ports = project.fake_env({"q4": ""})  # KITTY_COMPOSE_ENABLED=false
    assert project.run("start", timeout=60).returncode == 0
    rows, _ = components(project)
    assert list(rows) == [("llama", "q4"), ("native", "images-worker"), ("native", "images-api"),
                          ("compose", "compose")]
    assert (rows["llama", "q4"]["state"], rows["llama", "q4"]["ports"]) == ("running", [f"127.0.0.1:{ports['q4']}"])
    compose = rows["compose", "compose"]
    assert (compose["state"], compose["health"]) == ("disabled", "-")
    assert compose["detail"].startswith("KITTY_COMPOSE_ENABLED=false")

    assert project.run("stop", timeout=60).returncode == 0
    rows, _ = components(project)
    q4 = rows["llama", "q4"]
    assert (q4["state"], q4["health"], q4["detail"], q4["runbook"]) == ("stopped", "-", "stopped by `stop`", None)
    assert q4["ports"] == [f"127.0.0.1:{ports['q4']}"]  # where it would listen

    missing = project.run("status", "--env-file", str(project.root / "nope.env"))
    assert missing.returncode == Exit.CONFIG
    assert "env file not found" in missing.stderr and "nope.env" in missing.stderr
    assert "ops/runbooks/configuration.md" in missing.stderr
