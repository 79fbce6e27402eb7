"""`.env.example` documents every variable kitty-ops reads, and is itself valid configuration
apart from the files and binary that only the operator's machine has."""

from __future__ import annotations

import re
from pathlib import Path

from kitty_ops import config
from tests.harness import REPO

# Documented in README.md instead: set in the environment (KITTY_ENV_FILE is set by kitty-ops
# for compose), not in the env file.
ENVIRONMENT_ONLY = {"KITTY_PROJECT_DIR", "KITTY_CACHE_DIR", "KITTY_ENV_FILE"}
COMPOSE_FILE = REPO / "infra" / "compose" / "docker-compose.yml"


def variables_read_by_code() -> set[str]:
    code = "".join(p.read_text() for p in (REPO / "kitty_ops").rglob("*.py"))
    return set(re.findall(r'"((?:LLAMACPP|KITTY|IMAGES_SERVICE)_[A-Z0-9_]+)"', code))


def variables_of_the_compose_file() -> set[str]:
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE_FILE.read_text()))


def test_every_variable_the_code_reads_is_documented():
    example = (REPO / ".env.example").read_text()
    readme = (REPO / "README.md").read_text()
    missing = {v for v in variables_read_by_code() - ENVIRONMENT_ONLY if v not in example}
    assert not missing, f"add to .env.example: {sorted(missing)}"
    assert all(v in readme for v in ENVIRONMENT_ONLY)


def test_every_variable_of_the_compose_file_is_documented():
    example = (REPO / ".env.example").read_text()
    found = variables_of_the_compose_file()
    assert {"POSTGRES_PASSWORD", "REDIS_IMAGE", "KITTY_BIND_ADDRESS"} <= found  # the scan works
    missing = {v for v in found - ENVIRONMENT_ONLY if f"\n{v}=" not in example}
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_every_per_server_setting_is_documented_for_q4():
    example = (REPO / ".env.example").read_text()
    settings = ("MODEL", "PORT", "CTX", "THREADS", "BATCH", "UBATCH", "PARALLEL", "N_GPU_LAYERS",
                "FLASH_ATTN", "ALIAS", "MMPROJ", "ENABLED", "EXTRA_ARGS", "BIND")
    assert [s for s in settings if f"LLAMACPP_Q4_{s}" not in example] == []


def test_the_example_parses_without_configuration_errors(tmp_path: Path):
    settings, problems = config.load_settings(REPO / ".env.example", environ={"KITTY_PROJECT_DIR": str(tmp_path)})
    # The one thing a copy cannot have: the object store's secret, which the operator chooses.
    assert [(p.subject, p.is_error) for p in problems] == [("OBJECT_STORE_SECRET_KEY", True)]
    assert "set OBJECT_STORE_SECRET_KEY" in problems[0].fix
    assert settings.compose.object_store == "rustfs"
    assert [s.port for s in settings.servers] == [8083, 8082, 8085, 8086]
    assert settings.server("f16").model.name.endswith("-00001-of-00004.gguf")
