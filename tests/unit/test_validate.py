"""validate.check against the fake llama-server and tiny GGUF models."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from kitty_ops.config import load_settings
from kitty_ops.llama import validate
from kitty_ops.problems import Severity
from kitty_ops.runbooks import Runbook
from tests.harness import FAKE_SERVER, free_port, write_tiny_gguf


def configure(root: Path, servers: tuple[str, ...] = ("q4",), **extra: object):
    """An env file for `servers` on the fake engine with tiny models; returns (settings, problems)."""
    models = root / "models"
    write_tiny_gguf(models / "tiny.gguf")
    values: dict[str, object] = {
        "LLAMACPP_SERVERS": ",".join(servers),
        "LLAMACPP_SERVER_BIN": str(FAKE_SERVER),
        "LLAMACPP_MODELS_DIR": str(models),
        "KITTY_COMPOSE_ENABLED": "false",  # the llama tier only: no container secrets to check
    }
    for name in servers:
        up = name.upper()
        values[f"LLAMACPP_{up}_MODEL"] = "tiny.gguf"
        values[f"LLAMACPP_{up}_PORT"] = free_port()
        values[f"LLAMACPP_{up}_THREADS"] = 1
    values.update(extra)
    env = root / ".env"
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items() if v is not None))
    return load_settings(env, {"KITTY_PROJECT_DIR": str(root)})


def check(root: Path, servers: tuple[str, ...] = ("q4",), **extra: object) -> validate.Report:
    settings, problems = configure(root, servers, **extra)
    assert problems == [], problems
    return validate.check(settings, problems)


def errors_for(report: validate.Report, subject: str):
    return [p for p in report.problems if p.subject == subject and p.is_error]


def test_good_configuration_passes(tmp_path):
    report = check(tmp_path, ("q4", "f16"))
    assert report.problems == []
    assert report.ok
    assert report.engine is not None
    assert "9999" in report.engine.version
    assert "--fake-load-seconds" in report.engine.flags
    assert report.model_bytes == {"q4": 32, "f16": 32}
    assert report.running == set()


def test_unknown_extra_args_flag_names_the_variable(tmp_path):
    report = check(tmp_path, ("q4", "f16"), LLAMACPP_F16_EXTRA_ARGS='"--fake-load-seconds 1 --no-such-flag"')
    assert not report.ok
    [problem] = report.problems
    assert problem.subject == "LLAMACPP_F16_EXTRA_ARGS"
    assert "--no-such-flag" in problem.message
    assert "'f16'" in problem.message
    assert problem.runbook is Runbook.ENGINE_BINARY


def test_unknown_extra_args_flag_after_normalisation(tmp_path):
    # `--cache_reuse=4` is normalised to `--cache-reuse`, which the fake does not list.
    report = check(tmp_path, LLAMACPP_Q4_EXTRA_ARGS="--cache_reuse=4")
    [problem] = report.problems
    assert problem.subject == "LLAMACPP_Q4_EXTRA_ARGS"
    assert "--cache-reuse" in problem.message


def test_alias_spellings_in_extra_args_are_accepted(tmp_path):
    report = check(tmp_path, LLAMACPP_Q4_EXTRA_ARGS='"-ngl 20 -fa --no-ui --flash_attn=auto"')
    assert report.problems == []


@pytest.mark.parametrize("extra", ["--port 9999", "--port=9999", '"--host 0.0.0.0"', '"-m other.gguf"'])
def test_extra_args_with_managed_flag_is_an_error(tmp_path, extra):
    report = check(tmp_path, LLAMACPP_Q4_EXTRA_ARGS=extra)
    problems = errors_for(report, "LLAMACPP_Q4_EXTRA_ARGS")
    assert len(problems) == 1, report.problems
    assert "kitty-ops manages itself" in problems[0].message
    assert problems[0].runbook is Runbook.CONFIGURATION
    assert not report.ok


def test_vision_without_mmproj_setting_is_an_error(tmp_path):
    # No LLAMACPP_VISION_MMPROJ: the seed default projector is not there.
    report = check(tmp_path, ("vision",))
    problems = errors_for(report, "LLAMACPP_VISION_MMPROJ")
    assert len(problems) == 1, report.problems
    assert problems[0].runbook is Runbook.VISION_MMPROJ
    assert not report.ok


def test_vision_with_no_projector_at_all_is_an_error(tmp_path):
    import dataclasses
    settings, problems = configure(tmp_path, ("vision",))
    vision = dataclasses.replace(settings.server("vision"), mmproj=None)
    report = validate.check(settings, problems, [vision])
    [problem] = report.problems
    assert problem.subject == "LLAMACPP_VISION_MMPROJ"
    assert "without a multimodal projector" in problem.message
    assert problem.runbook is Runbook.VISION_MMPROJ


def test_vision_with_mmproj_passes_and_counts_projector(tmp_path):
    write_tiny_gguf(tmp_path / "models" / "proj.gguf")
    report = check(tmp_path, ("vision",), LLAMACPP_VISION_MMPROJ="proj.gguf")
    assert report.problems == []
    assert report.model_bytes == {"vision": 64}


def test_missing_binary_names_server_bin(tmp_path):
    report = check(tmp_path, LLAMACPP_SERVER_BIN=str(tmp_path / "no" / "llama-server"))
    [problem] = report.problems
    assert problem.subject == "LLAMACPP_SERVER_BIN"
    assert problem.is_error
    assert problem.runbook is Runbook.ENGINE_BINARY
    assert report.engine is None


def test_binary_not_on_path_names_server_bin(tmp_path):
    report = check(tmp_path, LLAMACPP_SERVER_BIN="kitty-ops-no-such-llama-server")
    assert [p.subject for p in report.problems] == ["LLAMACPP_SERVER_BIN"]


def test_bad_model_file_is_an_error(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "broken.gguf").write_bytes(b"GGUF\x01\x00\x00\x00" + b"\0" * 8)
    report = check(tmp_path, ("q4", "f16"), LLAMACPP_Q4_MODEL="broken.gguf",
                   LLAMACPP_F16_MODEL="absent.gguf")
    q4 = errors_for(report, "LLAMACPP_Q4_MODEL")
    f16 = errors_for(report, "LLAMACPP_F16_MODEL")
    assert len(q4) == 1 and "unsupported GGUF version 1" in q4[0].message
    assert len(f16) == 1 and "file not found" in f16[0].message
    assert q4[0].runbook is Runbook.MODEL_FILES


def test_memory_warning_when_models_exceed_physical_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(validate.psutil, "virtual_memory", lambda: types.SimpleNamespace(total=40))
    report = check(tmp_path, ("q4", "f16"))
    [problem] = report.problems
    assert problem.severity is Severity.WARNING
    assert problem.subject == "LLAMACPP_SERVERS"
    assert problem.runbook is Runbook.OUT_OF_MEMORY
    assert report.ok  # a warning, not an error


def test_no_memory_warning_when_models_fit(tmp_path, monkeypatch):
    monkeypatch.setattr(validate.psutil, "virtual_memory", lambda: types.SimpleNamespace(total=64))
    report = check(tmp_path, ("q4", "f16"))
    assert report.problems == []


def test_port_in_use_is_an_error(tmp_path):
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        report = check(tmp_path, LLAMACPP_Q4_PORT=port)
    problems = errors_for(report, "LLAMACPP_Q4_PORT")
    assert len(problems) == 1, report.problems
    assert str(port) in problems[0].message
    assert problems[0].runbook is Runbook.PORT_CONFLICT


def test_config_problems_are_kept_and_all_checks_still_run(tmp_path):
    settings, problems = configure(tmp_path, ("q4",), LLAMACPP_Q4_CTX="huge",
                                   LLAMACPP_Q4_EXTRA_ARGS="--port 1", LLAMACPP_Q4_MODEL="absent.gguf")
    assert [p.subject for p in problems] == ["LLAMACPP_Q4_CTX"]
    report = validate.check(settings, problems)
    subjects = [p.subject for p in report.problems]
    assert subjects[0] == "LLAMACPP_Q4_CTX"
    assert "LLAMACPP_Q4_EXTRA_ARGS" in subjects
    assert "LLAMACPP_Q4_MODEL" in subjects


@pytest.mark.parametrize("damaged", ["{not json", "[]\n"], ids=["not-json", "json-not-an-object"])
def test_damaged_record_does_not_break_validate(tmp_path, damaged):
    settings, problems = configure(tmp_path)
    settings.logs_dir.mkdir(parents=True)
    (settings.logs_dir / "llamacpp-q4.json").write_text(damaged)
    report = validate.check(settings, problems)
    assert report.problems == [] and report.running == set()


@pytest.mark.parametrize("extra", ['"--api-key=hunter2secret"', '"-hft=hunter2secret"',
                                   '"--hf-token hunter2secret"'])
def test_secret_in_extra_args_never_appears_in_problems(tmp_path, extra):
    # The fake engine does not list these flags, so each one is reported; its value must not be.
    report = check(tmp_path, LLAMACPP_Q4_EXTRA_ARGS=extra)
    assert errors_for(report, "LLAMACPP_Q4_EXTRA_ARGS"), report.problems
    for problem in report.problems:
        assert "hunter2secret" not in " ".join(map(str, problem.as_dict().values())), problem
