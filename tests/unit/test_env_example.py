"""`.env.example` documents every variable kitty-ops reads, and is itself valid configuration
apart from the files and binary that only the operator's machine has."""

from __future__ import annotations

import re
from pathlib import Path

from kitty_ops import config
from tests.conftest import REPO

ENVIRONMENT_ONLY = {"KITTY_PROJECT_DIR", "KITTY_CACHE_DIR"}  # documented in README.md instead


def variables_read_by_code() -> set[str]:
    code = "".join(p.read_text() for p in (REPO / "kitty_ops").glob("*.py"))
    return set(re.findall(r'"((?:LLAMACPP|KITTY)_[A-Z0-9_]+)"', code))


def test_every_variable_the_code_reads_is_documented():
    example = (REPO / ".env.example").read_text()
    readme = (REPO / "README.md").read_text()
    missing = {v for v in variables_read_by_code() - ENVIRONMENT_ONLY if v not in example}
    assert not missing, f"add to .env.example: {sorted(missing)}"
    assert all(v in readme for v in ENVIRONMENT_ONLY)


def test_every_per_server_setting_is_documented_for_q4():
    example = (REPO / ".env.example").read_text()
    settings = ("MODEL", "PORT", "CTX", "THREADS", "BATCH", "UBATCH", "PARALLEL", "N_GPU_LAYERS",
                "FLASH_ATTN", "ALIAS", "MMPROJ", "ENABLED", "EXTRA_ARGS", "BIND")
    assert [s for s in settings if f"LLAMACPP_Q4_{s}" not in example] == []


def test_the_example_parses_without_configuration_errors(tmp_path: Path):
    settings, problems = config.load_settings(REPO / ".env.example", environ={"KITTY_PROJECT_DIR": str(tmp_path)})
    assert problems == []
    assert [s.port for s in settings.servers] == [8083, 8082, 8085, 8086]
    assert settings.server("f16").model.name.endswith("-00001-of-00004.gguf")
