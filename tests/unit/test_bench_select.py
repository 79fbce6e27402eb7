"""Which servers the bench measures: only those running, provably ours and healthy; any other is
an error naming it and the next step, before a request is sent."""

from __future__ import annotations

import pytest

from kitty_ops import config
from kitty_ops.bench.run import BenchError, select
from kitty_ops.exitcodes import Exit
from kitty_ops.host import observe, probes, procs, records
from kitty_ops.runbooks import Runbook


def settings_for(tmp_path, **extra):
    env = tmp_path / ".env"
    lines = {"LLAMACPP_SERVERS": "q4,f16,summary", "KITTY_COMPOSE_ENABLED": "false", "LLAMACPP_F16_ENABLED": "false",
             **extra}
    env.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    settings, _ = config.load_settings(env, environ={"KITTY_PROJECT_DIR": str(tmp_path)})
    return settings


def record(name: str, pid: int = 4242) -> records.EngineRecord:
    return records.EngineRecord(name, pid, 1.0, [], ["llama-server", "--port", "1"], 1, "http://127.0.0.1:1",
                                "/m/model.gguf", None, "6500", "llama-server", "/l", 0, 1.0)


def healthy(name):
    return observe.Observed(name, record(name), liveness=procs.Liveness.OURS,
                            probe=probes.ProbeResult(probes.Health.READY, 200, "ok", 0.001))


def looks(states):
    return lambda logs_dir, name: states.get(name) or observe.Observed(name)


def test_named_servers_must_run_be_ours_and_healthy(tmp_path):
    settings = settings_for(tmp_path)
    chosen, skipped = select(settings, ("q4",), looks({"q4": healthy("q4")}))
    assert [spec.name for spec, _ in chosen] == ["q4"] and skipped == []

    with pytest.raises(BenchError) as stopped:
        select(settings, ("summary",), looks({}))
    assert stopped.value.code == Exit.FAILED
    assert "summary is not running" in str(stopped.value)
    assert "kitty-ops start --only summary" in str(stopped.value)

    gone = observe.Observed("q4", record("q4"), liveness=procs.Liveness.GONE)
    with pytest.raises(BenchError) as died:
        select(settings, ("q4",), looks({"q4": gone}))
    assert "pid 4242 is gone" in str(died.value) and died.value.runbook is Runbook.SERVER_CRASH

    foreign = observe.Observed("q4", record("q4"), liveness=procs.Liveness.FOREIGN)
    with pytest.raises(BenchError) as reused:
        select(settings, ("q4",), looks({"q4": foreign}))
    assert "belongs to another process" in str(reused.value) and reused.value.runbook is Runbook.STALE_PID

    loading = observe.Observed("q4", record("q4"), liveness=procs.Liveness.OURS,
                               probe=probes.ProbeResult(probes.Health.LOADING, 503, "Loading model", 0.01))
    with pytest.raises(BenchError) as waiting:
        select(settings, ("q4",), looks({"q4": loading}))
    assert "still loading" in str(waiting.value) and waiting.value.runbook is Runbook.SERVER_TIMEOUT


def test_an_unknown_name_is_a_usage_error_listing_the_configured_ones(tmp_path):
    with pytest.raises(BenchError) as unknown:
        select(settings_for(tmp_path), ("q5",), looks({}))
    assert unknown.value.code == Exit.USAGE and "'q5'" in str(unknown.value) and "q4" in str(unknown.value)


def test_without_names_every_enabled_running_server_is_benched_and_the_rest_said(tmp_path):
    settings = settings_for(tmp_path)
    chosen, skipped = select(settings, (), looks({"q4": healthy("q4")}))
    assert [spec.name for spec, _ in chosen] == ["q4"]  # f16 is disabled: not even mentioned
    assert len(skipped) == 1 and skipped[0].startswith("summary is not running")
    with pytest.raises(BenchError) as none:
        select(settings, (), looks({}))
    assert none.value.code == Exit.FAILED and "no enabled llama server is running" in str(none.value)
