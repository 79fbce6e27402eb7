"""status: the pure translation of health's components into the operator's table (STATE and
HEALTH words, the operator's intent, the disabled parts health leaves out) and its two renderings
(the table and the versioned JSON). No process, no Docker."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from kitty_ops import config
from kitty_ops.containers.compose import ContainerState
from kitty_ops.exitcodes import Health as Level
from kitty_ops.health import judge, render, status
from kitty_ops.health.judge import Component
from kitty_ops.health.run import Report
from kitty_ops.host import procs, records
from kitty_ops.host.desired import Intent
from kitty_ops.host.observe import Observed
from kitty_ops.host.probes import Health as Probe, ProbeResult
from kitty_ops.host.supervision import ComponentState, Exit
from kitty_ops.runbooks import Runbook


def settings(tmp_path: Path, **values: str) -> config.Settings:
    env = {"LLAMACPP_SERVERS": "q4,vision", "LLAMACPP_Q4_MODEL": "q4.gguf", "LLAMACPP_Q4_PORT": "18083",
           "LLAMACPP_VISION_MODEL": "v.gguf", "LLAMACPP_VISION_ENABLED": "false",
           "KITTY_COMPOSE_ENABLED": "false", **values}
    path = tmp_path / ".env"
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    loaded, _ = config.load_settings(path, {"KITTY_PROJECT_DIR": str(tmp_path)})
    return loaded


def record(name: str = "q4", pid: int = 4242) -> records.EngineRecord:
    now = time.time()
    return records.EngineRecord(
        name=name, pid=pid, create_time=now - 90, cmdline=["llama-server"], argv=["llama-server", "-m", "x"],
        port=18083, url="http://127.0.0.1:18083", model="/models/deep/q4.gguf", mmproj=None,
        engine_version="version: 6500 (abc123)", binary="/bin/llama-server", log="/l/llamacpp-q4.log",
        log_offset=0, started_at=now - 90)


def llama(observed: Observed, enabled: bool = True) -> Component:
    return judge.from_process(observed, "llama", "kitty-q4", enabled, "http://127.0.0.1:18083/health",
                              Runbook.SERVER_CRASH)


def healthy(name: str = "q4") -> Component:
    return llama(Observed(name, record(name), liveness=procs.Liveness.OURS, uptime=90.0, rss_bytes=300 * 2**20,
                          probe=ProbeResult(Probe.READY, 200, "ok", 0.002)))


def dead() -> Component:
    return llama(Observed("q4", record(), liveness=procs.Liveness.GONE, log_tail=("bye",)))


def absent() -> Component:
    return llama(Observed("q4"))


def container(service: str, state: str = "running", health: str = "healthy", **extra) -> Component:
    return judge.from_container(service, ContainerState(
        service, "f" * 64, state, health, 0, 0, "", image="postgres:16-alpine", started_epoch=time.time() - 5,
        ports=("127.0.0.1:41041->5432/tcp",), memory_bytes=50 * 2**20, **extra), True, time.time())


def row(c: Component, intent: str | None = None, by: str = "start", started_any: bool = False) -> status.Row:
    return status.from_component(c, Intent(intent, by, 1.0) if intent else None, started_any)


# ------------------------------------------------------------------------------ state words

def test_a_healthy_server_is_running_and_healthy_with_what_the_table_shows():
    r = row(healthy())
    assert (r.state, r.health, r.detail) == ("running", "healthy", "")
    assert r.pid == 4242 and r.ports == ("127.0.0.1:18083",) and r.memory_bytes == 300 * 2**20
    assert r.model == "/models/deep/q4.gguf" and r.engine == "version: 6500 (abc123)"
    assert r.uptime and 80 < r.uptime < 100 and r.runbook is None


@pytest.mark.parametrize("probe, health", [(ProbeResult(Probe.LOADING, 503, "Loading model", 0.01), "loading"),
                                           (ProbeResult(Probe.REFUSED, None, "refused", 0.01), "starting")])
def test_a_server_not_answering_yet_is_starting(probe, health):
    r = row(llama(Observed("q4", record(), liveness=procs.Liveness.OURS, uptime=2.0, probe=probe)))
    assert (r.state, r.health) == ("starting", health)


def test_a_hung_server_is_running_but_unhealthy():
    r = row(llama(Observed("q4", record(), liveness=procs.Liveness.OURS, uptime=600.0, suspended=True,
                           probe=ProbeResult(Probe.ERROR, None, "timed out", 1.0))))
    assert (r.state, r.health) == ("running", "unhealthy") and "timed out" in r.detail


def test_a_recorded_server_that_died_is_down_unless_the_operator_said_down():
    r = row(dead())
    assert (r.state, r.health) == ("down", "-")
    assert "pid 4242 is gone" in r.detail and r.runbook == Runbook.SERVER_CRASH.path and r.pid == 4242
    assert row(dead(), "up").state == "down"
    stopped = row(dead(), "down", by="stop")
    assert stopped.state == "stopped" and stopped.runbook is None


def test_an_enabled_server_with_no_record_reads_by_the_operators_intent():
    never = row(absent())
    assert (never.state, never.health, never.detail) == ("stopped", "-", "not started")
    assert never.runbook is None
    stopped = row(absent(), "down", by="stop")
    assert (stopped.state, stopped.detail) == ("stopped", "stopped by `stop`")
    lost = row(absent(), "up")
    assert lost.state == "down" and lost.detail.startswith("wanted up (by `start`) but not running")
    assert lost.runbook == Runbook.SERVER_CRASH.path
    skipped = row(absent(), started_any=True)
    assert skipped.state == "skipped" and "--only" in skipped.detail


def test_an_unreadable_record_is_down():
    r = row(llama(Observed("q4", bad_record="not JSON")))
    assert (r.state, r.detail) == ("down", "unreadable record: not JSON")


def test_the_supervisors_words_win_and_its_history_is_kept():
    view = ComponentState("llama:q4", "llama", "q4", state="failed", restarts=2, detail="crash loop",
                          history=[Exit(1.0, "exited with status 3", 3, None)] * 3)
    r = row(judge.with_supervision(dead(), view))
    assert (r.state, r.health) == ("failed", "-")
    assert r.supervised and r.restarts == 2 and r.last_exit == "exited with status 3"
    assert r.crash_history == ["exited with status 3"] * 3
    backoff = ComponentState("llama:q4", "llama", "q4", state="backoff", restarts=1, detail="restart in 0.4s",
                             history=[Exit(1.0, "killed by SIGKILL", None, 9)])
    assert row(judge.with_supervision(dead(), backoff)).state == "backoff"
    running = ComponentState("llama:q4", "llama", "q4", state="running", restarts=1,
                             history=[Exit(1.0, "killed by SIGKILL", None, 9)])
    r = row(judge.with_supervision(healthy(), running))
    assert (r.state, r.health, r.restarts, r.last_exit) == ("running", "healthy", 1, "killed by SIGKILL")


def test_containers_in_the_engines_words():
    up = row(container("postgres"))
    assert (up.state, up.health) == ("running", "healthy")
    assert up.container == "f" * 64 and up.ports == ("127.0.0.1:41041->5432/tcp",)
    assert up.model == "postgres:16-alpine" and up.engine is None and up.memory_bytes == 50 * 2**20
    assert row(container("postgres", health="starting")).state == "starting"
    assert row(container("postgres", health="unhealthy")).health == "unhealthy"
    assert row(container("postgres", "exited", "")).state == "exited"
    assert row(container("postgres", "exited", ""), "down", by="stop").state == "stopped"
    assert row(container("postgres", "created", "")).state == "created"
    assert row(container("postgres", "restarting", "")).state == "restarting"
    assert row(container("postgres", "paused", "healthy")).state == "paused"
    missing = judge.from_container("redis", None, True, time.time())
    assert row(missing).state == "stopped" and row(missing, "up").state == "down"
    assert row(missing, started_any=True).state == "skipped"


def test_a_part_health_could_not_judge_is_unknown():
    c = Component("compose", "compose", Level.UNKNOWN, "unknown", "no answer within the deadline")
    assert (row(c).state, row(c).health) == ("unknown", "-")


# --------------------------------------------------------------------------- the whole table

def test_disabled_parts_are_rows_in_their_place(tmp_path):
    rows = status.rows([healthy()], settings(tmp_path), {})
    assert [(r.tier, r.name, r.state) for r in rows] == [
        ("llama", "q4", "running"), ("llama", "vision", "disabled"),
        ("native", "images-worker", "disabled"), ("native", "images-api", "disabled"),
        ("compose", "compose", "disabled")]
    vision = rows[1]
    assert vision.detail == "LLAMACPP_VISION_ENABLED=false" and vision.model.endswith("v.gguf")
    assert vision.ports == ("127.0.0.1:8086",)
    assert rows[2].detail == "IMAGES_SERVICE_ENABLED=false"
    assert rows[-1].detail.startswith("KITTY_COMPOSE_ENABLED=false")


def test_the_compose_tier_when_enabled_and_a_recorded_server_no_longer_configured(tmp_path):
    conf = settings(tmp_path, KITTY_COMPOSE_ENABLED="true", LLAMACPP_VISION_ENABLED="true")
    old = healthy("old")
    rows = status.rows([container("postgres"), healthy(), old, container("redis")], conf,
                       {"llama:q4": Intent("up", "start", 1.0)})
    assert [(r.tier, r.name) for r in rows] == [("llama", "q4"), ("llama", "old"), ("native", "images-worker"),
                                                ("native", "images-api"), ("compose", "postgres"),
                                                ("compose", "redis")]
    assert rows[0].intent == "up" and rows[1].intent is None  # vision enabled, not started: health's to show


def test_a_disabled_server_that_still_runs_says_both(tmp_path):
    rows = status.rows([healthy("vision")], settings(tmp_path), {})
    vision = next(r for r in rows if r.name == "vision")
    assert vision.state == "running" and vision.detail.startswith("disabled (LLAMACPP_VISION_ENABLED=false)")


# ------------------------------------------------------------------------------- rendering

def view(tmp_path) -> status.Status:
    supervised = judge.with_supervision(healthy(), ComponentState(
        "llama:q4", "llama", "q4", state="running", restarts=1, history=[Exit(1.0, "killed by SIGKILL", None, 9)]))
    report = Report(Level.OK, [supervised, container("postgres")], time.time(), 0.012, 1.0, 5.0)
    return status.build(report, settings(tmp_path, KITTY_COMPOSE_ENABLED="true"), {})


def test_the_table_has_one_row_per_component_in_short_words(tmp_path):
    out = io.StringIO()
    render.status_text(view(tmp_path), out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["TIER", "NAME", "STATE", "HEALTH", "PID/CONTAINER", "PORTS", "UPTIME", "MEMORY",
                                "MODEL/IMAGE", "ENGINE", "OFFLOAD", "RESTARTS", "DETAIL"]
    assert len(lines) == 1 + 5
    q4 = lines[1].split()
    assert q4[:6] == ["llama", "q4", "running", "healthy", "4242", "127.0.0.1:18083"]
    assert "300.0 MiB" in lines[1] and " q4.gguf " in lines[1] and "/models/deep" not in lines[1]
    assert "6500 (abc123)" in lines[1] and "version:" not in lines[1]
    assert "1 (last: killed by SIGKILL)" in lines[1]
    pg = lines[-1].split()
    assert pg[:6] == ["compose", "postgres", "running", "healthy", "f" * 12, "127.0.0.1:41041->5432/tcp"]
    assert "50.0 MiB" in lines[-1] and "postgres:16-alpine" in lines[-1]


def test_the_json_is_versioned_with_every_component(tmp_path):
    out = io.StringIO()
    render.status_json(view(tmp_path), out)
    data = json.loads(out.getvalue())
    assert data["schema"] == "kitty-ops/status/v2" and "servers" not in data
    assert data["seconds"] == 0.012 and data["notes"] == []
    by_id = {(c["tier"], c["name"]): c for c in data["components"]}
    assert list(by_id) == [("llama", "q4"), ("llama", "vision"), ("native", "images-worker"),
                           ("native", "images-api"), ("compose", "postgres")]
    q4 = by_id["llama", "q4"]
    assert (q4["state"], q4["health"], q4["pid"], q4["ports"]) == ("running", "healthy", 4242, ["127.0.0.1:18083"])
    assert q4["supervised"] and q4["restarts"] == 1 and q4["last_exit"] == "killed by SIGKILL"
    assert q4["crash_history"] == ["killed by SIGKILL"] and q4["memory_bytes"] == 300 * 2**20
    assert by_id["compose", "postgres"]["container"] == "f" * 64
    assert by_id["llama", "vision"]["state"] == "disabled"


def test_a_live_components_detail_leaves_out_what_the_columns_say():
    assert row(container("postgres")).detail == ""
    assert row(judge.with_requests(healthy(), 2)).detail == "2 requests in flight"
    worker = judge.from_process(Observed("images-worker", record("images-worker"), liveness=procs.Liveness.OURS,
                                         uptime=5.0), "native", "images-worker", True, None, Runbook.NATIVE_SERVICE)
    assert (row(worker).state, row(worker).health, row(worker).detail) == ("running", "healthy", "no health endpoint")
    starting = row(container("postgres", health="starting"))
    assert starting.detail.startswith("running, healthcheck starting")


def test_a_live_server_shows_what_it_runs_on_and_a_missing_metrics_endpoint(tmp_path):
    """OFFLOAD from the record (kitty_ops.llama.offload's summary), `offload` and `metrics` in the
    JSON; a server started without --metrics says so in its detail, and only while it runs."""
    partial = {"backend": "cuda", "layers": 20, "total": 81, "devices": ["CUDA0 (NVIDIA GeForce RTX 4090)"],
               "cpu_fallback": []}
    q4 = healthy()
    q4.offload, q4.metrics = partial, False
    r = row(q4)
    assert r.detail == "no /metrics (start with --metrics)" and r.runbook is None
    assert (r.offload, r.metrics) == (partial, False)
    q4.metrics = True
    assert row(q4).detail == ""
    gone = dead()
    gone.metrics = False
    assert "no /metrics" not in row(gone).detail

    q4.metrics = False
    report = Report(Level.OK, [q4], time.time(), 0.01, 1.0, 5.0)
    view = status.build(report, settings(tmp_path), {})
    out = io.StringIO()
    render.status_text(view, out)
    header, line = out.getvalue().splitlines()[:2]
    assert line[header.index("OFFLOAD"):].split()[0:2] == ["cuda", "20/81"]
    assert line.rstrip().endswith("no /metrics (start with --metrics)")
    out = io.StringIO()
    render.status_json(view, out)
    shown = next(c for c in json.loads(out.getvalue())["components"] if c["name"] == "q4")
    assert shown["offload"]["backend"] == "cuda" and (shown["offload"]["layers"], shown["offload"]["total"]) == (20, 81)
    assert shown["offload"]["devices"] == ["CUDA0 (NVIDIA GeForce RTX 4090)"] and shown["metrics"] is False
