"""health: the pure judgement (levels, words, details, runbooks), the status line, the
performance data, the JSON shape and the Prometheus file (parsed with prometheus-client)."""

from __future__ import annotations

import io
import json
import re
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kitty_ops.containers.compose import ContainerState, epoch, parse_inspect
from kitty_ops.exitcodes import Health as Level
from kitty_ops.health import judge as health, render as health_render
from kitty_ops.health.judge import Component
from kitty_ops.health.run import Report
from kitty_ops.host import procs, records
from kitty_ops.host.observe import Observed
from kitty_ops.host.probes import Health as Probe, ProbeResult
from kitty_ops.runbooks import Runbook


def record(name: str = "q4", pid: int = 4242, age: float = 100.0) -> records.EngineRecord:
    now = time.time()
    return records.EngineRecord(
        name=name, pid=pid, create_time=now - age, cmdline=["llama-server"], argv=["llama-server", "-m", "x"],
        port=8083, url="http://127.0.0.1:8083", model="/m/x.gguf", mmproj=None,
        engine_version="version: 6500 (abc123)", binary="/bin/llama-server", log="/l/llamacpp-q4.log",
        log_offset=0, started_at=now - age)


def alive(probe: ProbeResult | None, uptime: float = 100.0, suspended: bool = False) -> Observed:
    return Observed("q4", record(), liveness=procs.Liveness.OURS, probe=probe, uptime=uptime,
                    suspended=suspended)


def judge(observed: Observed, enabled: bool = True) -> Component | None:
    return health.from_process(observed, "llama", "kitty-q4", enabled, "http://127.0.0.1:8083/health",
                               Runbook.SERVER_CRASH)


# ------------------------------------------------------------------------ recorded processes

def test_healthy_server_is_ok_with_latency_version_and_uptime():
    c = judge(alive(ProbeResult(Probe.READY, 200, "ok", 0.012), uptime=3600))
    assert (c.level, c.status) == (Level.OK, "healthy")
    assert c.latency == 0.012
    assert c.uptime == 3600
    assert c.version == "version: 6500 (abc123)"
    assert c.pid == 4242
    assert c.service == "kitty-q4"
    assert c.runbook is None


def test_503_is_loading_a_warning_not_healthy():
    c = judge(alive(ProbeResult(Probe.LOADING, 503, "Loading model", 0.003)))
    assert (c.level, c.status) == (Level.WARNING, "loading")
    assert "Loading model" in c.detail and "503" in c.detail
    assert c.runbook is Runbook.SERVER_TIMEOUT


def test_refused_just_after_start_is_starting_but_later_critical():
    young = judge(alive(ProbeResult(Probe.REFUSED, None, "connection refused", 0.001), uptime=2))
    assert (young.level, young.status) == (Level.WARNING, "starting")
    old = judge(alive(ProbeResult(Probe.REFUSED, None, "connection refused", 0.001), uptime=600))
    assert (old.level, old.status) == (Level.CRITICAL, "unhealthy")
    assert "refuses connections" in old.detail


def test_timeout_is_critical_and_says_so():
    c = judge(alive(ProbeResult(Probe.ERROR, None, "timed out", 2.0)))
    assert (c.level, c.status) == (Level.CRITICAL, "unhealthy")
    assert c.detail == "timed out"
    assert c.latency == 2.0
    assert c.runbook is Runbook.SERVER_CRASH


def test_suspended_process_is_named_as_such():
    c = judge(alive(ProbeResult(Probe.ERROR, None, "timed out", 1.0), suspended=True))
    assert c.level is Level.CRITICAL
    assert "suspended" in c.detail


def test_other_http_status_is_critical_with_the_status():
    c = judge(alive(ProbeResult(Probe.ERROR, 500, "HTTP 500: boom", 0.01)))
    assert c.level is Level.CRITICAL and "HTTP 500" in c.detail


def test_enabled_without_record_is_down_and_disabled_without_record_is_left_out():
    down = judge(Observed("q4"))
    assert (down.level, down.status) == (Level.CRITICAL, "down")
    assert "not running" in down.detail
    assert judge(Observed("q4"), enabled=False) is None


def test_disabled_but_recorded_and_running_is_still_reported():
    c = judge(alive(ProbeResult(Probe.READY, 200, "ok", 0.01)), enabled=False)
    assert c is not None and c.level is Level.OK


def test_dead_process_is_critical_with_reason_and_log_lines():
    seen = Observed("q4", record(age=30), liveness=procs.Liveness.GONE,
                    log_tail=("loading model", "ggml_abort: GGML_ASSERT(n < 64) failed"))
    c = judge(seen)
    assert (c.level, c.status) == (Level.CRITICAL, "down")
    assert "pid 4242 is gone" in c.detail
    assert "it exited without `kitty-ops stop`" in c.detail and "started 30s ago" in c.detail
    assert "GGML_ASSERT(n < 64) failed" in c.detail  # the last log line, in the detail itself
    assert c.log_tail == ["loading model", "ggml_abort: GGML_ASSERT(n < 64) failed"]
    assert c.runbook is Runbook.SERVER_CRASH
    assert c.latency is None and c.uptime is None


def test_dead_process_with_memory_error_points_at_the_oom_runbook():
    seen = Observed("q4", record(), liveness=procs.Liveness.GONE,
                    log_tail=("ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer",))
    assert judge(seen).runbook is Runbook.OUT_OF_MEMORY


def test_reused_pid_and_unreadable_record():
    foreign = judge(Observed("q4", record(), liveness=procs.Liveness.FOREIGN))
    assert foreign.level is Level.CRITICAL
    assert "belongs to another process" in foreign.detail
    assert foreign.runbook is Runbook.STALE_PID
    bad = judge(Observed("q4", bad_record="llamacpp-q4.json: Expecting value"))
    assert bad.level is Level.CRITICAL and "unreadable record" in bad.detail
    assert bad.runbook is Runbook.STALE_PID


def test_process_without_health_endpoint_is_judged_by_liveness():
    worker = health.from_process(alive(None), "native", "images-worker", True, None, Runbook.NATIVE_SERVICE)
    assert worker.level is Level.OK and "no health endpoint" in worker.detail
    stopped = health.from_process(alive(None, suspended=True), "native", "images-worker", True, None,
                                  Runbook.NATIVE_SERVICE)
    assert stopped.level is Level.CRITICAL and stopped.runbook is Runbook.NATIVE_SERVICE


# ------------------------------------------------------------------------------- containers

def state(status: str = "running", health_word: str = "healthy", **extra) -> ContainerState:
    values = dict(service="postgres", id="a1b2c3d4e5f6", status=status, health=health_word, exit_code=0,
                  restarts=0, started_at="", image="postgres:16-alpine", probe_seconds=0.04,
                  started_epoch=1000.0)
    values.update(extra)
    return ContainerState(**values)


def test_running_healthy_container_is_ok_with_image_uptime_and_probe_time():
    c = health.from_container("postgres", state(), True, now=1060.0)
    assert (c.level, c.status) == (Level.OK, "healthy")
    assert c.version == "postgres:16-alpine"
    assert c.uptime == 60.0
    assert c.latency == 0.04
    assert c.container == "a1b2c3d4e5f6"


@pytest.mark.parametrize("kwargs, level, status, words", [
    ({"health_word": "starting"}, Level.WARNING, "starting", "starting"),
    ({"health_word": "unhealthy", "last_probe": "exit 1: no response"}, Level.CRITICAL, "unhealthy",
     "last healthcheck: exit 1: no response"),
    ({"status": "exited", "exit_code": 137}, Level.CRITICAL, "down", "exited with code 137"),
    ({"status": "restarting", "restarts": 5, "exit_code": 1}, Level.CRITICAL, "down", "crash-looping (5 restarts"),
    ({"status": "created", "health_word": ""}, Level.CRITICAL, "down", "created"),
    ({"status": "paused"}, Level.CRITICAL, "unhealthy", "paused"),
])
def test_container_states(kwargs, level, status, words):
    c = health.from_container("postgres", state(**kwargs), True, now=2000.0)
    assert (c.level, c.status) == (level, status)
    assert words in c.detail
    if level is not Level.OK:
        assert c.runbook is Runbook.CONTAINER_FAILED


def test_container_without_healthcheck_is_ok_while_running_and_missing_one_is_down():
    c = health.from_container("rustfs", state(health_word=""), False, now=2000.0)
    assert c.level is Level.OK and "no healthcheck" in c.detail
    missing = health.from_container("redis", None, True, now=2000.0)
    assert (missing.level, missing.status) == (Level.CRITICAL, "down")
    assert "no container" in missing.detail


def test_parse_inspect_reads_image_probe_duration_and_start_time():
    item = {"Id": "b" * 64, "RestartCount": 0,
            "Config": {"Image": "redis:7-alpine", "Labels": {"com.docker.compose.project": "kt",
                                                              "com.docker.compose.service": "redis"}},
            "State": {"Status": "running", "ExitCode": 0, "StartedAt": "2026-11-23T17:00:00.5Z",
                      "Health": {"Status": "healthy", "Log": [
                          {"Start": "2026-11-23T17:00:10.000000000Z", "End": "2026-11-23T17:00:10.025000000Z",
                           "ExitCode": 0, "Output": "PONG"}]}}}
    redis = parse_inspect([item], "kt")["redis"]
    assert redis.image == "redis:7-alpine"
    assert redis.probe_seconds == pytest.approx(0.025, abs=1e-6)
    assert redis.started_epoch == pytest.approx(epoch("2026-11-23T17:00:00Z") + 0.5)


@pytest.mark.parametrize("text, expected", [
    ("1970-01-01T00:00:00Z", 0.0),
    ("1970-01-01T01:00:00+01:00", 0.0),
    ("1970-01-01T00:00:01.250000000Z", 1.25),
    ("1969-12-31T19:00:00-05:00", 0.0),
    ("0001-01-01T00:00:00Z", None),  # docker's zero time: never started
    ("", None), (None, None), ("yesterday", None),
])
def test_epoch(text, expected):
    assert epoch(text) == expected


# --------------------------------------------------------------------------------- the stack

@pytest.mark.parametrize("levels, expected", [
    ([], Level.OK),
    ([Level.OK, Level.OK], Level.OK),
    ([Level.OK, Level.WARNING], Level.WARNING),
    ([Level.WARNING, Level.UNKNOWN], Level.UNKNOWN),
    ([Level.UNKNOWN, Level.CRITICAL, Level.WARNING], Level.CRITICAL),
])
def test_worst_ranks_critical_over_unknown_over_warning(levels, expected):
    assert health.worst(levels) is expected


def comp(name: str, level: Level, status: str, detail: str = "", latency: float | None = 0.01,
         tier: str = "llama", **extra) -> Component:
    return Component(name, tier, level, status, detail, latency=latency, **extra)


def test_dependencies_carry_the_status_of_what_is_needed():
    brain = comp("brain", Level.OK, "healthy", tier="compose", needs=("postgres", "q4"))
    parts = [comp("q4", Level.WARNING, "loading"), comp("postgres", Level.OK, "healthy", tier="compose"), brain]
    health.link_dependencies(parts)
    assert brain.dependencies == {"postgres": "healthy", "q4": "loading"}
    lonely = comp("x", Level.OK, "healthy", needs=("gone",))
    health.link_dependencies([lonely])
    assert lonely.dependencies == {"gone": "unknown"}


def test_summary_counts_and_names_the_bad_ones_most_urgent_first():
    parts = [comp("q4", Level.OK, "healthy"), comp("f16", Level.WARNING, "loading", "Loading model (HTTP 503)"),
             comp("vision", Level.CRITICAL, "down", "pid 9 is gone; last log line: boom")]
    assert health.summary(parts) == ("1/3 healthy; critical: vision down (pid 9 is gone); "
                                     "warning: f16 loading (Loading model (HTTP 503))")
    many = [comp(f"s{i}", Level.CRITICAL, "down", "x") for i in range(5)]
    assert health.summary(many) == "0/5 healthy; critical: s0 down, s1 down, s2 down, s3 down, s4 down"
    assert health.summary([]) == "no component is enabled"


def test_perfdata_follows_the_plugin_format():
    parts = [comp("q4", Level.OK, "healthy", latency=0.0123), comp("f16", Level.CRITICAL, "down", latency=None)]
    assert health.perfdata(parts, None, 2.0) == "'q4_latency'=0.012s;;2;0;"


def report(parts: list[Component], level: Level | None = None, **extra) -> Report:
    values = dict(checked_at=1_800_000_000.0, seconds=0.123, probe_timeout=2.0, deadline=10.0)
    values.update(extra)
    return Report(level if level is not None else health.worst([c.level for c in parts]), parts, **values)


# Monitoring Plugins Development Guidelines: "SERVICE STATUS: Information text|perfdata",
# perfdata as space-separated 'label'=value[UOM];[warn];[crit];[min];[max].
STATUS_LINE = re.compile(r"^KITTY (OK|WARNING|CRITICAL|UNKNOWN) - [^|\n]+ \| "
                         r"('[^'=]+'=[0-9.]+s;[0-9.]*;[0-9.]*;[0-9.]*;[0-9.]* ?)+$")


def test_status_line_shape_and_text_details():
    parts = [comp("q4", Level.OK, "healthy", latency=0.012),
             comp("f16", Level.CRITICAL, "down", "pid 7 is gone", latency=None, log_tail=["a", "boom"],
                  runbook=Runbook.SERVER_CRASH)]
    out = io.StringIO()
    health_render.text(report(parts), out)
    lines = out.getvalue().splitlines()
    assert STATUS_LINE.match(lines[0]), lines[0]
    assert lines[0].startswith("KITTY CRITICAL - 1/2 healthy; critical: f16 down (pid 7 is gone) | ")
    assert "'q4_latency'=0.012s;;2;0;" in lines[0]
    assert "'check_time'=0.123s;;10;0;" in lines[0]
    body = "\n".join(lines[1:])
    assert "  boom" in body and "see ops/runbooks/llama-server-crash.md" in body


def test_json_shape_is_versioned_and_has_the_manuals_fields():
    parts = [comp("brain", Level.OK, "healthy", tier="compose", service="brain", version="kitty/brain:1",
                  uptime=12.34, dependencies={"q4": "healthy"})]
    out = io.StringIO()
    health_render.json_report(report(parts), out)
    data = json.loads(out.getvalue())
    assert data["schema"] == "kitty-ops/health/v1"
    assert (data["status"], data["exit_code"]) == ("OK", 0)
    assert data["counts"] == {"OK": 1, "WARNING": 0, "CRITICAL": 0, "UNKNOWN": 0}
    brain = data["components"][0]
    for key, value in {"status": "healthy", "service": "brain", "version": "kitty/brain:1", "uptime": 12.3,
                       "dependencies": {"q4": "healthy"}, "level": "OK", "latency": 0.01}.items():
        assert brain[key] == value, key
    assert data["checked_at"].startswith("2027-01-15T08:00:00")


def test_prometheus_file_parses_and_holds_the_values():
    parts = [comp("q4", Level.OK, "healthy", latency=0.012, uptime=60.0),
             comp("postgres", Level.CRITICAL, "down", latency=None, tier="compose"),
             comp('we"ird\\name', Level.WARNING, "loading", latency=0.5)]
    families = {f.name: f for f in text_string_to_metric_families(health_render.prometheus(report(parts)))}
    assert families["kitty_health_status"].samples[0].value == 2
    up = {(s.labels["component"], s.labels["tier"]): s.value for s in families["kitty_component_up"].samples}
    assert up == {("q4", "llama"): 1, ("postgres", "compose"): 0, ('we"ird\\name', "llama"): 0}
    status = {s.labels["component"]: s.value for s in families["kitty_component_status"].samples}
    assert status == {"q4": 0, "postgres": 2, 'we"ird\\name': 1}
    probe = {s.labels["component"]: s.value for s in families["kitty_component_probe_seconds"].samples}
    assert probe == {"q4": 0.012, 'we"ird\\name': 0.5}  # no probe, no sample: not a fake zero
    assert families["kitty_health_last_run_timestamp_seconds"].samples[0].value == 1_800_000_000.0
    assert {s.labels["component"]: s.value for s in families["kitty_component_uptime_seconds"].samples} == {"q4": 60.0}
