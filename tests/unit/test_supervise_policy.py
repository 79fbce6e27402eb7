"""The supervisor's pure decisions (kitty_ops.supervise.policy), its state file, its alerts'
environment and what health makes of its state (kitty_ops.health.judge.with_supervision)."""

from __future__ import annotations

import os
import stat

import pytest

from kitty_ops.exitcodes import Health as Level
from kitty_ops.health import judge
from kitty_ops.host import probes, supervision
from kitty_ops.runbooks import Runbook
from kitty_ops.supervise import alerts
from kitty_ops.supervise.policy import Policy, backoff, decide, is_hang, next_streak, probe_failed, prune

POLICY = Policy(backoff_initial=1.0, backoff_max=8.0, backoff_reset=60.0, max_failures=3, window=100.0,
                hang_probes=3)


def test_backoff_doubles_up_to_the_cap():
    assert [backoff(POLICY, n) for n in range(0, 7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff(POLICY, 10_000) == 8.0  # no overflow


def test_streak_resets_after_a_healthy_spell_only():
    assert next_streak(POLICY, 4, None) == 5  # never healthy since the last failure
    assert next_streak(POLICY, 4, 59.9) == 5
    assert next_streak(POLICY, 4, 60.0) == 1


def test_gives_up_at_k_failures_within_the_window():
    assert decide(POLICY, [0.0], 0.0, 1) .give_up is False
    assert decide(POLICY, [0.0, 10.0], 10.0, 2).delay == 2.0
    verdict = decide(POLICY, [0.0, 10.0, 20.0], 20.0, 3)
    assert verdict.give_up and verdict.recent == 3
    # Old failures fall out of the window: three failures spread over 250 s are no crash loop.
    assert decide(POLICY, [0.0, 120.0, 240.0], 240.0, 3).give_up is False
    assert prune(POLICY, [0.0, 120.0, 240.0], 240.0) == [240.0]


def test_loading_is_never_a_hang():
    assert not probe_failed(probes.Health.READY)
    assert not probe_failed(probes.Health.LOADING)  # a 503 while a 70B model loads
    assert probe_failed(probes.Health.ERROR)  # timeouts and errors
    assert probe_failed(probes.Health.REFUSED)
    assert not is_hang(POLICY, 2) and is_hang(POLICY, 3)


def view(state: str, restarts: int = 2) -> supervision.ComponentState:
    history = [supervision.Exit(1.0, "exited with status 3", 3, None),
               supervision.Exit(2.0, "killed by SIGKILL", None, 9)]
    return supervision.ComponentState("llama:q4", "llama", "q4", state, restarts=restarts, history=history,
                                      detail="crash loop: 3 failures" if state == "failed" else "restart in 2s")


def down() -> judge.Component:
    return judge.Component("q4", "llama", Level.CRITICAL, "down", "not running: no record",
                           runbook=Runbook.SERVER_CRASH)


def test_a_crash_loop_is_critical_failed_with_its_history_never_merely_down():
    c = judge.with_supervision(down(), view("failed"))
    assert (c.level, c.status, c.runbook) == (Level.CRITICAL, "failed", Runbook.CRASH_LOOP)
    assert "crash loop" in c.detail
    assert (c.supervised, c.restarts, c.last_exit) == (True, 2, "killed by SIGKILL")


def test_backoff_is_a_warning_and_healthy_stays_ok():
    c = judge.with_supervision(down(), view("backoff"))
    assert (c.level, c.status) == (Level.WARNING, "backoff")
    ok = judge.Component("q4", "llama", Level.OK, "healthy", "ok")
    assert judge.with_supervision(ok, view("running")).level is Level.OK
    assert judge.with_supervision(down(), None).status == "down"  # no live supervisor: unchanged


def test_state_file_round_trip_private_and_believed_only_while_its_writer_lives(tmp_path):
    me = supervision.SupervisorState(os.getpid(), 0.0, 1.0, 2.0, {"llama:q4": view("failed")})
    supervision.save(tmp_path, me)
    assert stat.S_IMODE(os.stat(supervision.path(tmp_path)).st_mode) == 0o600
    loaded = supervision.load(tmp_path)
    assert loaded.components["llama:q4"].last_exit.signal == 9
    assert loaded.components["llama:q4"].crash_history() == "exited with status 3; killed by SIGKILL"
    # Start time 0.0 is not this process's: a file of a dead (or different) supervisor says nothing.
    assert supervision.live(tmp_path) is None
    import psutil
    me.create_time = psutil.Process().create_time()
    supervision.save(tmp_path, me)
    assert supervision.live(tmp_path) is not None


def test_alert_environment_carries_the_event_and_no_shell():
    env = alerts.environment("give-up", "q4", "llama", "crash loop:\n3 failures", 4, "killed by SIGKILL",
                             "ops/runbooks/crash-loop.md", 0.0, {"PATH": "/bin"})
    assert env["KITTY_ALERT_EVENT"] == "give-up" and env["KITTY_ALERT_COMPONENT"] == "q4"
    assert env["KITTY_ALERT_DETAIL"] == "crash loop: 3 failures"  # one line
    assert env["KITTY_ALERT_RESTARTS"] == "4" and env["KITTY_ALERT_TIME"] == "1970-01-01T00:00:00+00:00"
    assert env["PATH"] == "/bin"
    with pytest.raises(ValueError):
        alerts.environment("boom", "q4", "llama", "", 0, "", "", 0.0, {})


def test_a_hung_alert_command_is_killed_at_its_timeout_and_never_blocks(tmp_path):
    import time
    lines: list[str] = []
    alerter = alerts.Alerter(["sleep", "30"], 0.3, lines.append)
    began = time.monotonic()
    assert alerter.send({"KITTY_ALERT_EVENT": "crash", "PATH": os.environ["PATH"]})
    assert time.monotonic() - began < 0.2  # send returns at once
    assert alerter.wait_idle(5)
    assert any("killed after 0.3s" in line for line in lines)


def test_alert_command_is_an_argv(tmp_path):
    out = tmp_path / "got"
    alerter = alerts.Alerter(["sh", "-c", 'printf %s "$KITTY_ALERT_DETAIL" > "$0"', str(out)], 5, print)
    env = alerts.environment("crash", "q4", "llama", "$(touch pwned); `id`", 1, "", "", 0.0, os.environ)
    alerter.send(env)
    assert alerter.wait_idle(5)
    assert out.read_text() == "$(touch pwned); `id`"  # data, never code
    assert not (tmp_path / "pwned").exists()


def test_alert_command_parsing(tmp_path):
    from kitty_ops import config
    settings, problems = config.load_settings(tmp_path / "none.env", environ={
        "KITTY_PROJECT_DIR": str(tmp_path), "KITTY_ALERT_COMMAND": "ntfy publish 'kitty alerts'"})
    assert settings.supervise.alert_command == ("ntfy", "publish", "kitty alerts")
    settings, problems = config.load_settings(tmp_path / "none.env", environ={
        "KITTY_PROJECT_DIR": str(tmp_path), "KITTY_ALERT_COMMAND": "ntfy 'unclosed"})
    assert settings.supervise.alert_command == ()
    assert any(p.subject == "KITTY_ALERT_COMMAND" for p in problems)


def test_metrics_text_parses_as_prometheus_and_says_what_status_says():
    from prometheus_client.parser import text_string_to_metric_families
    from kitty_ops.supervise import metrics
    running = supervision.ComponentState("llama:f16", "llama", "f16", "running", restarts=1, last_restart=90.0,
                                         history=[supervision.Exit(80.0, "killed by SIGKILL", None, 9)])
    state = supervision.SupervisorState(1, 0.0, 10.0, 100.0, {"llama:q4": view("failed"), "llama:f16": running})
    families = {f.name: f for f in text_string_to_metric_families(metrics.render(state, 100.0))}
    value = lambda fam, **labels: next(s.value for s in families[fam].samples  # noqa: E731
                                       if all(s.labels.get(k) == v for k, v in labels.items()))
    assert value("kitty_supervisor_uptime_seconds") == 90.0
    assert value("kitty_supervised_up", component="f16") == 1 and value("kitty_supervised_up", component="q4") == 0
    assert value("kitty_supervised_state", component="q4", state="failed") == 1
    # the parser names a counter family without its _total suffix
    assert value("kitty_supervised_restarts", component="q4") == 2
    assert value("kitty_supervised_last_exit_signal", component="f16") == 9
    assert value("kitty_supervised_seconds_since_restart", component="f16") == 10.0


def test_metrics_endpoint_listens_on_loopback_only(tmp_path):
    import urllib.request
    from kitty_ops.supervise import metrics
    server = metrics.serve(0, lambda: "kitty_x 1\n")
    try:
        host, port = server.server_address
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert reply.read() == b"kitty_x 1\n" and "version=0.0.4" in reply.headers["Content-Type"]
        with pytest.raises(OSError):
            metrics.serve(port, lambda: "")  # taken: the caller reports it
    finally:
        server.shutdown()
        server.server_close()


def test_docker_events_are_read_as_die_and_start_of_a_service():
    import json as js
    from kitty_ops.supervise import containers

    def line(action, **attributes):
        return js.dumps({"status": action, "Actor": {"Attributes": {"com.docker.compose.service": "redis",
                                                                    **attributes}}})
    assert containers.parse(line("die", exitCode="137")) == ("redis", "die", 137)
    assert containers.parse(line("start")) == ("redis", "start", None)
    assert containers.parse(line("health_status")) is None
    assert containers.parse(line("die", **{"com.docker.compose.oneoff": "True"})) is None  # compose run
    assert containers.parse("not json") is None
    assert containers.parse(js.dumps({"Action": "die", "Actor": {"Attributes": {}}})) is None  # no service
