"""REQUIRE_GPU in the configuration: `LLAMACPP_REQUIRE_GPU` for every server,
`LLAMACPP_<NAME>_REQUIRE_GPU` for one (the per-server value wins), read as booleans like every
other setting, and refused together with N_GPU_LAYERS=0."""

from __future__ import annotations

from pathlib import Path

from kitty_ops.config import load_settings
from kitty_ops.runbooks import Runbook


def load(tmp_path: Path, environ: dict[str, str] | None = None, **values: str):
    env = {"LLAMACPP_SERVERS": "q4,f16", "KITTY_COMPOSE_ENABLED": "false", **values}
    path = tmp_path / ".env"
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return load_settings(path, {"KITTY_PROJECT_DIR": str(tmp_path), **(environ or {})})


def required(settings) -> dict[str, bool]:
    return {s.name: s.require_gpu for s in settings.servers}


def test_off_unless_asked(tmp_path):
    settings, problems = load(tmp_path)
    assert required(settings) == {"q4": False, "f16": False} and problems == []


def test_the_global_setting_and_a_per_server_one_that_wins(tmp_path):
    settings, problems = load(tmp_path, LLAMACPP_REQUIRE_GPU="true", LLAMACPP_F16_REQUIRE_GPU="no")
    assert required(settings) == {"q4": True, "f16": False} and problems == []
    settings, _ = load(tmp_path, LLAMACPP_Q4_REQUIRE_GPU="1")
    assert required(settings) == {"q4": True, "f16": False}


def test_the_process_environment_overrides_the_file(tmp_path):
    settings, _ = load(tmp_path, {"LLAMACPP_REQUIRE_GPU": "on"}, LLAMACPP_REQUIRE_GPU="false")
    assert required(settings) == {"q4": True, "f16": True}


def test_a_bad_value_is_a_problem_naming_the_variable_and_falls_back_to_off(tmp_path):
    settings, problems = load(tmp_path, LLAMACPP_Q4_REQUIRE_GPU="maybe")
    assert [p.subject for p in problems] == ["LLAMACPP_Q4_REQUIRE_GPU"]
    assert problems[0].is_error and "a boolean" in problems[0].message
    assert required(settings)["q4"] is False


def test_requiring_the_gpu_of_a_server_that_offloads_nothing_is_refused(tmp_path):
    _, problems = load(tmp_path, LLAMACPP_REQUIRE_GPU="true", LLAMACPP_F16_N_GPU_LAYERS="0")
    assert [p.subject for p in problems] == ["LLAMACPP_REQUIRE_GPU"]
    problem = problems[0]
    assert problem.is_error and "'f16' must run on the GPU" in problem.message
    assert "LLAMACPP_F16_REQUIRE_GPU=false" in problem.fix and problem.runbook is Runbook.CPU_FALLBACK
    # Allowed to run on the CPU: no problem; a disabled server is not judged.
    _, problems = load(tmp_path, LLAMACPP_REQUIRE_GPU="true", LLAMACPP_F16_N_GPU_LAYERS="0",
                       LLAMACPP_F16_REQUIRE_GPU="false")
    assert problems == []
    _, problems = load(tmp_path, LLAMACPP_REQUIRE_GPU="true", LLAMACPP_F16_N_GPU_LAYERS="0",
                       LLAMACPP_F16_ENABLED="false")
    assert problems == []
