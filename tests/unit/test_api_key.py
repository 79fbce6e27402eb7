"""The llama servers' API key: read from LLAMACPP_<NAME>_API_KEY / LLAMACPP_API_KEY, handed to
llama-server as LLAMA_API_KEY (never argv), sent by kitty-ops's own requests; an operator who
puts it on the command line, or opens a server beyond loopback without one, is told."""

from __future__ import annotations

from kitty_ops.llama import command, lifecycle
from tests.unit.test_validate import check, configure

KEY = "k3y-not-for-ps-0123456789"


def test_the_key_is_read_per_server_or_for_all_and_never_shown(tmp_path):
    settings, problems = configure(tmp_path, ("q4", "f16"), LLAMACPP_API_KEY=KEY, LLAMACPP_F16_API_KEY="other-key")
    assert problems == []
    q4, f16 = settings.server("q4"), settings.server("f16")
    assert (q4.api_key, f16.api_key) == (KEY, "other-key")
    assert q4.auth == {"Authorization": f"Bearer {KEY}"}
    assert KEY not in repr(q4) and KEY not in repr(settings)


def test_the_key_goes_to_the_environment_never_into_argv(tmp_path, monkeypatch):
    settings, _ = configure(tmp_path, LLAMACPP_Q4_API_KEY=KEY)
    spec = settings.server("q4")
    assert not any(KEY in arg for arg in command.build_argv(spec, "llama-server"))
    assert lifecycle.server_environment(spec)["LLAMA_API_KEY"] == KEY


def test_without_a_key_no_inherited_key_reaches_the_server(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_API_KEY", "from-the-operators-shell")
    settings, _ = configure(tmp_path)
    assert "LLAMA_API_KEY" not in lifecycle.server_environment(settings.server("q4"))
    assert settings.server("q4").auth == {}


def test_a_key_on_the_command_line_is_an_error_naming_the_variable(tmp_path):
    report = check(tmp_path, LLAMACPP_Q4_EXTRA_ARGS=f'"--api-key {KEY}"')
    problem = next(p for p in report.problems if p.subject == "LLAMACPP_Q4_EXTRA_ARGS" and "--api-key" in p.message)
    assert problem.is_error and "LLAMACPP_Q4_API_KEY" in problem.fix and KEY not in problem.message + problem.fix


def test_a_server_opened_beyond_loopback_without_a_key_is_warned_about(tmp_path):
    report = check(tmp_path, LLAMACPP_Q4_BIND="0.0.0.0")
    warned = [p for p in report.problems if p.subject == "LLAMACPP_Q4_BIND"]
    assert len(warned) == 1 and not warned[0].is_error and "without an API key" in warned[0].message
    keyed = check(tmp_path, LLAMACPP_Q4_BIND="0.0.0.0", LLAMACPP_Q4_API_KEY=KEY)
    assert not [p for p in keyed.problems if p.subject == "LLAMACPP_Q4_BIND"]
