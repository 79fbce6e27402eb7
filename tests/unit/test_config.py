"""config.load_settings: env file + process environment + defaults -> settings and problems."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kitty_ops.config import load_settings
from kitty_ops.problems import Severity
from kitty_ops.runbooks import Runbook


def write_env(path: Path, values: dict[str, object]) -> Path:
    """An env file with `values`. The container tier is on by default and its object store has
    one value no default can give, so it is here unless a test sets it (None leaves it out)."""
    values = {"OBJECT_STORE_SECRET_KEY": GOOD_SECRET, **values}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items() if v is not None))
    return path


GOOD_SECRET = "s3cret-for-the-tests"


def subjects(problems) -> list[str]:
    return [p.subject for p in problems]


def test_missing_default_env_file_names_it_and_hints_at_example(tmp_path):
    settings, problems = load_settings(None, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert len(problems) == 1
    problem = problems[0]
    assert problem.severity is Severity.ERROR
    assert problem.subject == str(tmp_path.resolve() / ".env")
    assert "not found" in problem.message
    assert ".env.example" in problem.fix
    assert problem.runbook is Runbook.CONFIGURATION
    assert settings.env_file_found is False


def test_missing_explicit_env_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "my.env"
    settings, problems = load_settings(missing, {"KITTY_PROJECT_DIR": str(tmp_path)})
    errors = [p for p in problems if p.is_error]
    assert [p.subject for p in errors] == [str(missing)]
    assert "not found" in errors[0].message
    assert "--env-file" in errors[0].fix
    assert settings.env_file_found is False
    # The defaults still apply, so the remaining checks can run.
    assert [s.name for s in settings.servers] == ["q4", "f16", "summary", "vision"]


def test_every_problem_is_reported_in_one_call(tmp_path):
    env = write_env(tmp_path / ".env", {
        "LLAMACPP_Q4_PORT": "eighty",          # not an integer
        "LLAMACPP_F16_PORT": "70000",          # out of range
        "LLAMACPP_SUMMARY_ENABLED": "maybe",   # not a boolean
        "LLAMACPP_FLASH_ATTN": "sometimes",    # not on/off/auto
        "LLAMACPP_VISION_PORT": "8085",        # same as summary's default port
    })
    settings, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert all(p.is_error for p in problems)
    found = subjects(problems)
    for var in ("LLAMACPP_Q4_PORT", "LLAMACPP_F16_PORT", "LLAMACPP_SUMMARY_ENABLED",
                "LLAMACPP_FLASH_ATTN", "LLAMACPP_VISION_PORT"):
        assert var in found, (var, found)
    # The bad values fall back to their defaults.
    assert settings.server("q4").port == 8083
    assert settings.server("f16").port == 8082
    assert settings.server("summary").enabled is True
    assert all(s.flash_attn == "on" for s in settings.servers)
    clash = next(p for p in problems if p.subject == "LLAMACPP_VISION_PORT")
    assert clash.runbook is Runbook.PORT_CONFLICT
    assert "'summary'" in clash.message and "'vision'" in clash.message and "8085" in clash.message
    bad_port = next(p for p in problems if p.subject == "LLAMACPP_Q4_PORT")
    assert "'eighty'" in bad_port.message and "TCP port" in bad_port.message


def test_two_servers_on_one_port_is_an_error(tmp_path):
    env = write_env(tmp_path / ".env", {"LLAMACPP_Q4_PORT": 8082})  # f16's default
    _, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert subjects(problems) == ["LLAMACPP_F16_PORT"]
    assert "8082" in problems[0].message


def test_disabled_server_does_not_clash_on_port(tmp_path):
    env = write_env(tmp_path / ".env", {"LLAMACPP_Q4_PORT": 8082, "LLAMACPP_F16_ENABLED": "false"})
    _, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert problems == []


def test_seed_manual_variable_names_work(tmp_path):
    env = write_env(tmp_path / ".env", {
        "LLAMACPP_MODELS_DIR": "/srv/models",
        "LLAMACPP_Q4_MODEL": "q4/model.gguf",
        "LLAMACPP_Q4_PORT": 9083,
        "LLAMACPP_Q4_BATCH_SIZE": 512,
        "LLAMACPP_F16_THREADS": 7,
        "LLAMACPP_VISION_MMPROJ": "vision/proj.gguf",
        "LLAMACPP_SUMMARY_ENABLED": 0,
        "LLAMACPP_BIN": "/opt/llama/bin/llama-server",
    })
    settings, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert problems == []
    q4 = settings.server("q4")
    assert q4.model == Path("/srv/models/q4/model.gguf")
    assert q4.port == 9083
    assert q4.batch == 512
    assert settings.server("f16").threads == 7
    assert settings.server("vision").mmproj == Path("/srv/models/vision/proj.gguf")
    assert settings.server("summary").enabled is False
    assert [s.name for s in settings.enabled_servers] == ["q4", "f16", "vision"]
    assert settings.server_bin == "/opt/llama/bin/llama-server"


def test_server_bin_preferred_over_seed_spelling(tmp_path):
    env = write_env(tmp_path / ".env", {"LLAMACPP_BIN": "/a/llama-server",
                                        "LLAMACPP_SERVER_BIN": "/b/llama-server"})
    settings, _ = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert settings.server_bin == "/b/llama-server"


def test_defaults(tmp_path):
    env = write_env(tmp_path / ".env", {})
    settings, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert problems == []
    assert settings.env_file_found is True
    by_name = {s.name: s for s in settings.servers}
    assert list(by_name) == ["q4", "f16", "summary", "vision"]
    assert {n: s.port for n, s in by_name.items()} == {"q4": 8083, "f16": 8082, "summary": 8085,
                                                         "vision": 8086}
    assert {n: s.ctx for n, s in by_name.items()} == {"q4": 16384, "f16": 16384, "summary": 8192,
                                                        "vision": 8192}
    assert {n: s.alias for n, s in by_name.items()} == {
        "q4": "kitty-q4", "f16": "kitty-f16", "summary": "kitty-summary", "vision": "kitty-vision"}
    for spec in settings.servers:
        assert spec.enabled is True
        assert spec.bind == "127.0.0.1"
        assert spec.n_gpu_layers == 999
        assert spec.flash_attn == "on"
        assert spec.jinja is True and spec.metrics is True
        assert spec.threads == (os.cpu_count() or 1)
        assert spec.extra_args == ()
    assert by_name["vision"].mmproj is not None
    assert by_name["q4"].mmproj is None
    assert settings.server_bin == "llama-server"
    assert settings.models_dir == tmp_path / "models"
    assert settings.logs_dir == tmp_path.resolve() / ".logs"
    assert settings.health_timeout == 300.0
    assert settings.compose_enabled is True
    assert settings.compose.project == "kitty"
    assert settings.compose.files == (tmp_path.resolve() / "infra/compose/docker-compose.yml",)
    # The operator's profiles (none) and the object store's: RustFS unless KITTY_OBJECT_STORE says.
    assert settings.compose.profiles == ("rustfs",) and settings.compose.object_store == "rustfs"
    assert settings.images.enabled is False


def test_process_environment_overrides_file_only_for_own_prefixes(tmp_path):
    env = write_env(tmp_path / ".env", {"LLAMACPP_Q4_PORT": 9001, "KITTY_STOP_GRACE": 4,
                                        "LLAMACPP_F16_CTX": 4096})
    environ = {
        "KITTY_PROJECT_DIR": str(tmp_path),
        "LLAMACPP_Q4_PORT": "9002",
        "KITTY_STOP_GRACE": "7",
        # Not LLAMACPP_*/KITTY_*: ignored, even though the file-level name is similar.
        "Q4_PORT": "1234",
        "llamacpp_f16_ctx": "2048",
    }
    settings, problems = load_settings(env, environ)
    assert problems == []
    assert settings.server("q4").port == 9002
    assert settings.stop_grace == 7.0
    assert settings.server("f16").ctx == 4096


def test_process_environment_does_not_leak_unrelated_variables(tmp_path):
    env = write_env(tmp_path / ".env", {})
    # A variable that would be an error if it were read as LLAMACPP_Q4_PORT does not count.
    settings, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path),
                                             "PORT": "bad", "CTX": "bad"})
    assert problems == []
    assert settings.server("q4").port == 8083


def test_shared_setting_applies_to_every_server_and_own_wins(tmp_path):
    env = write_env(tmp_path / ".env", {"LLAMACPP_THREADS": 3, "LLAMACPP_Q4_THREADS": 5,
                                        "LLAMACPP_BATCH_SIZE": 256})
    settings, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert problems == []
    assert settings.server("q4").threads == 5
    assert settings.server("f16").threads == 3
    assert {s.batch for s in settings.servers} == {256}


def test_relative_model_paths_resolve_against_models_dir(tmp_path):
    models = tmp_path / "elsewhere" / "models"
    env = write_env(tmp_path / "cfg" / ".env", {
        "LLAMACPP_MODELS_DIR": str(models),
        "LLAMACPP_Q4_MODEL": "a/q4.gguf",
        "LLAMACPP_F16_MODEL": "/abs/f16.gguf",
    })
    settings, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert problems == []
    assert settings.server("q4").model == models / "a" / "q4.gguf"
    assert settings.server("f16").model == Path("/abs/f16.gguf")
    assert settings.server("summary").model == models / "Hermes-3-8B" / "Hermes-3-Llama-3.1-8B.Q4_K_M.gguf"
    assert settings.server("vision").mmproj == models / "gemma-3-27b-it" / "gemma-3-27b-it-mmproj-bf16.gguf"


def test_relative_models_dir_resolves_against_env_file_directory(tmp_path, monkeypatch):
    cfg = tmp_path / "cfg"
    env = write_env(cfg / ".env", {"LLAMACPP_MODELS_DIR": "weights",
                                   "LLAMACPP_Q4_MODEL": "q4.gguf"})
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert problems == []
    assert settings.models_dir == cfg / "weights"
    assert settings.server("q4").model == cfg / "weights" / "q4.gguf"


def test_relative_env_file_path_resolves_against_cwd(tmp_path, monkeypatch):
    cfg = tmp_path / "cfg"
    write_env(cfg / "my.env", {"LLAMACPP_Q4_PORT": 9100})
    monkeypatch.chdir(tmp_path)
    settings, problems = load_settings(Path("cfg/my.env"), {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert problems == []
    assert settings.env_file == (cfg / "my.env").resolve()
    assert settings.server("q4").port == 9100
    assert settings.models_dir == (cfg / "models").resolve()


def test_custom_server_without_port_is_an_error(tmp_path):
    env = write_env(tmp_path / ".env", {"LLAMACPP_SERVERS": "q4,coder",
                                        "LLAMACPP_CODER_MODEL": "coder.gguf"})
    settings, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert subjects(problems) == ["LLAMACPP_CODER_PORT"]
    assert problems[0].is_error
    assert "'coder'" in problems[0].message
    coder = settings.server("coder")
    assert coder is not None and coder.port == 0
    assert coder.alias == "kitty-coder"
    assert coder.ctx == 8192


def test_custom_server_with_port_and_model_is_fine(tmp_path):
    env = write_env(tmp_path / ".env", {"LLAMACPP_SERVERS": "coder",
                                        "LLAMACPP_CODER_MODEL": "coder.gguf",
                                        "LLAMACPP_CODER_PORT": 9200})
    settings, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert problems == []
    assert [s.name for s in settings.servers] == ["coder"]
    assert settings.server("coder").port == 9200


def test_custom_server_without_model_is_an_error(tmp_path):
    env = write_env(tmp_path / ".env", {"LLAMACPP_SERVERS": "coder", "LLAMACPP_CODER_PORT": 9200})
    _, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert subjects(problems) == ["LLAMACPP_CODER_MODEL"]
    assert problems[0].runbook is Runbook.MODEL_FILES


def test_bad_and_duplicate_server_names(tmp_path):
    env = write_env(tmp_path / ".env", {"LLAMACPP_SERVERS": "q4,9bad,q4,f16"})
    settings, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert subjects(problems) == ["LLAMACPP_SERVERS", "LLAMACPP_SERVERS"]
    assert "'9bad'" in problems[0].message
    assert "twice" in problems[1].message
    assert [s.name for s in settings.servers] == ["q4", "f16"]


def test_unbalanced_extra_args_quote_is_an_error(tmp_path):
    (tmp_path / ".env").write_text(f"LLAMACPP_Q4_EXTRA_ARGS='--foo \"bar'\nOBJECT_STORE_SECRET_KEY={GOOD_SECRET}\n")
    settings, problems = load_settings(tmp_path / ".env", {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert subjects(problems) == ["LLAMACPP_Q4_EXTRA_ARGS"]
    assert settings.server("q4").extra_args == ()


def test_extra_args_are_split_like_a_shell(tmp_path):
    (tmp_path / ".env").write_text("LLAMACPP_Q4_EXTRA_ARGS=\"--temp 0.2 --system-prompt 'be brief'\"\n"
                                   f"OBJECT_STORE_SECRET_KEY={GOOD_SECRET}\n")
    settings, problems = load_settings(tmp_path / ".env", {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert problems == []
    assert settings.server("q4").extra_args == ("--temp", "0.2", "--system-prompt", "be brief")


def test_secret_values_never_appear_in_problems(tmp_path):
    secret = "hunter2"
    env = write_env(tmp_path / ".env", {
        "POSTGRES_PASSWORD": secret,
        "OPENAI_API_KEY": "sk-" + secret,
        # Plenty of bad values, so there are many problems whose text could leak it.
        "LLAMACPP_Q4_PORT": "x",
        "LLAMACPP_F16_PORT": "8083",
        "LLAMACPP_SUMMARY_ENABLED": "perhaps",
        "LLAMACPP_FLASH_ATTN": "maybe",
        "LLAMACPP_SERVERS": "q4,f16,summary,vision,Bad-Name,custom",
        "LLAMACPP_HEALTH_TIMEOUT": "-1",
    })
    _, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert len(problems) >= 6
    for problem in problems:
        text = " ".join(str(v) for v in problem.as_dict().values())
        assert secret not in text, problem


# ------------------------------------------------------------------- the object store and Grafana

def load(tmp_path: Path, values: dict[str, object], **environ: str):
    env = write_env(tmp_path / ".env", values)
    return load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path), **environ})


def only(problems, subject: str):
    found = [p for p in problems if p.subject == subject]
    assert len(found) == 1, problems
    return found[0]


def text_of(problems) -> str:
    return "\n".join(" ".join(str(v) for v in p.as_dict().values()) for p in problems)


def test_object_store_settings_read_the_new_names_before_minios_old_ones(tmp_path):
    settings, problems = load(tmp_path, {
        "OBJECT_STORE_ACCESS_KEY": "new-user", "OBJECT_STORE_SECRET_KEY": "new-secret-123",
        "OBJECT_STORE_PORT": 9100, "MINIO_ROOT_USER": "old-user", "MINIO_ROOT_PASSWORD": "old-secret-123",
        "MINIO_PORT": 9200})
    assert problems == []
    backup = settings.backup
    assert (backup.s3_url, backup.s3_access_key, backup.s3_secret_key) == (
        "http://127.0.0.1:9100", "new-user", "new-secret-123")


def test_an_existing_install_keeps_working_with_minios_old_names(tmp_path):
    settings, problems = load(tmp_path, {"OBJECT_STORE_SECRET_KEY": None, "KITTY_OBJECT_STORE": "minio",
                                         "MINIO_ROOT_USER": "old-user", "MINIO_ROOT_PASSWORD": "old-secret-123",
                                         "MINIO_PORT": 9200})
    assert [(p.subject, p.is_error) for p in problems] == [("KITTY_OBJECT_STORE", False)]  # the MinIO warning only
    backup = settings.backup
    assert (backup.s3_url, backup.s3_access_key, backup.s3_secret_key) == (
        "http://127.0.0.1:9200", "old-user", "old-secret-123")


def test_backup_s3_url_still_overrides_the_object_store_port(tmp_path):
    settings, _ = load(tmp_path, {"OBJECT_STORE_PORT": 9100, "KITTY_BACKUP_S3_URL": "http://10.0.0.5:7000"})
    assert settings.backup.s3_url == "http://10.0.0.5:7000"


def test_rustfs_is_the_default_object_store_and_its_profile_is_passed_to_compose(tmp_path):
    settings, problems = load(tmp_path, {"KITTY_COMPOSE_PROFILES": "app,observability",
                                         "GRAFANA_ADMIN_PASSWORD": "grafana-secret"})
    assert problems == []
    assert settings.compose.object_store == "rustfs"
    assert settings.compose.profiles == ("app", "observability", "rustfs")


def test_minio_can_be_kept_with_a_warning_that_it_gets_no_fixes(tmp_path):
    settings, problems = load(tmp_path, {"KITTY_OBJECT_STORE": "MinIO"})
    assert settings.compose.profiles == ("minio",)
    warned = only(problems, "KITTY_OBJECT_STORE")
    assert warned.severity is Severity.WARNING and not any(p.is_error for p in problems)
    assert "no more fixes" in warned.message and "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z" in warned.message
    assert "KITTY_OBJECT_STORE=rustfs" in warned.fix and warned.runbook is Runbook.BACKUP


def test_the_object_store_may_be_chosen_from_the_process_environment(tmp_path):
    settings, _ = load(tmp_path, {"KITTY_OBJECT_STORE": "rustfs"}, KITTY_OBJECT_STORE="minio")
    assert settings.compose.object_store == "minio" and settings.compose.profiles == ("minio",)


def test_an_unknown_object_store_is_an_error_and_rustfs_still_runs(tmp_path):
    settings, problems = load(tmp_path, {"KITTY_OBJECT_STORE": "ceph"})
    problem = only(problems, "KITTY_OBJECT_STORE")
    assert problem.is_error and "rustfs or minio" in problem.fix
    assert settings.compose.profiles == ("rustfs",)


def test_the_other_object_stores_profile_is_refused_so_only_one_runs(tmp_path):
    settings, problems = load(tmp_path, {"KITTY_COMPOSE_PROFILES": "app,minio"})
    problem = only(problems, "KITTY_COMPOSE_PROFILES")
    assert problem.is_error and "KITTY_OBJECT_STORE" in problem.fix
    assert settings.compose.profiles == ("app", "rustfs")


def test_an_install_from_before_rustfs_must_choose_before_it_starts_an_empty_store(tmp_path):
    _, problems = load(tmp_path, {"OBJECT_STORE_SECRET_KEY": None, "MINIO_ROOT_PASSWORD": "old-secret-123"})
    problem = only(problems, "KITTY_OBJECT_STORE")
    assert problem.is_error and "MINIO_ROOT_PASSWORD" in problem.message and "RustFS" in problem.message
    assert "KITTY_OBJECT_STORE=minio" in problem.fix and "restore" in problem.fix
    assert problem.runbook is Runbook.BACKUP
    # Chosen explicitly, RustFS takes the old name's key.
    settings, problems = load(tmp_path, {"OBJECT_STORE_SECRET_KEY": None, "MINIO_ROOT_PASSWORD": "old-secret-123",
                                         "KITTY_OBJECT_STORE": "rustfs"})
    assert problems == [] and settings.backup.s3_secret_key == "old-secret-123"


@pytest.mark.parametrize("line", ["", '""', "'   '"])
def test_a_missing_or_empty_object_store_secret_is_an_error_naming_it(tmp_path, line):
    (tmp_path / ".env").write_text(f"OBJECT_STORE_SECRET_KEY={line}\n")
    _, problems = load_settings(tmp_path / ".env", {"KITTY_PROJECT_DIR": str(tmp_path)})
    problem = only(problems, "OBJECT_STORE_SECRET_KEY")
    assert problem.is_error and "not set" in problem.message
    assert "set OBJECT_STORE_SECRET_KEY" in problem.fix and "8 to 40 characters" in problem.fix
    assert problem.runbook is Runbook.CONFIGURATION


@pytest.mark.parametrize(("values", "subject", "words"), [
    ({"OBJECT_STORE_ACCESS_KEY": "ab"}, "OBJECT_STORE_ACCESS_KEY", "has 2 characters; RustFS and MinIO need at least 3"),
    ({"OBJECT_STORE_SECRET_KEY": None, "MINIO_ROOT_USER": "ab", "MINIO_ROOT_PASSWORD": "old-secret-123",
      "KITTY_OBJECT_STORE": "rustfs"}, "MINIO_ROOT_USER", "has 2 characters"),
    ({"OBJECT_STORE_ACCESS_KEY": "a" * 129}, "OBJECT_STORE_ACCESS_KEY", "RustFS keys have at most 128"),
    ({"OBJECT_STORE_SECRET_KEY": "7-chars"}, "OBJECT_STORE_SECRET_KEY", "has 7 characters; RustFS and MinIO need at least 8"),
    ({"OBJECT_STORE_SECRET_KEY": "x" * 41}, "OBJECT_STORE_SECRET_KEY", "RustFS keys have at most 40"),
    ({"OBJECT_STORE_SECRET_KEY": "rustfsadmin"}, "OBJECT_STORE_SECRET_KEY", "RustFS's built-in default"),
    ({"OBJECT_STORE_SECRET_KEY": "RustFSAdmin"}, "OBJECT_STORE_SECRET_KEY", "RustFS's built-in default"),
    ({"OBJECT_STORE_SECRET_KEY": "minioadmin"}, "OBJECT_STORE_SECRET_KEY", "MinIO's built-in default"),
    ({"OBJECT_STORE_SECRET_KEY": "changeme"}, "OBJECT_STORE_SECRET_KEY", "a placeholder"),
    ({"OBJECT_STORE_ACCESS_KEY": "rustfsadmin"}, "OBJECT_STORE_ACCESS_KEY", "RustFS's built-in default"),
])
def test_object_store_credential_rules_are_errors_naming_the_variable(tmp_path, values, subject, words):
    _, problems = load(tmp_path, values)
    problem = only(problems, subject)
    assert problem.is_error and words in problem.message, problem
    assert problem.runbook is Runbook.CONFIGURATION and "OBJECT_STORE_" in problem.fix
    secret = values.get("OBJECT_STORE_SECRET_KEY") or ""
    if len(secret) >= 5:
        assert secret not in text_of(problems)  # a secret is never printed


def test_a_secret_longer_than_rustfs_takes_only_warns_while_minio_runs(tmp_path):
    _, problems = load(tmp_path, {"KITTY_OBJECT_STORE": "minio", "OBJECT_STORE_SECRET_KEY": "x" * 41})
    problem = only(problems, "OBJECT_STORE_SECRET_KEY")
    assert problem.severity is Severity.WARNING and "before moving to RustFS" in problem.fix


def test_object_store_keys_at_the_limits_are_fine(tmp_path):
    _, problems = load(tmp_path, {"OBJECT_STORE_ACCESS_KEY": "abc", "OBJECT_STORE_SECRET_KEY": "12345678"})
    assert problems == []
    _, problems = load(tmp_path, {"OBJECT_STORE_ACCESS_KEY": "a" * 128, "OBJECT_STORE_SECRET_KEY": "y" * 40})
    assert problems == []


def test_without_the_container_tier_no_container_secret_is_required(tmp_path):
    _, problems = load(tmp_path, {"KITTY_COMPOSE_ENABLED": "false", "OBJECT_STORE_SECRET_KEY": None,
                                  "KITTY_COMPOSE_PROFILES": "observability"})
    assert problems == []


@pytest.mark.parametrize(("password", "words"), [
    (None, "not set: the observability profile would start Grafana with admin/admin"),
    ("admin", "Grafana's built-in default"),
    ("Admin", "Grafana's built-in default"),
    ("changeme", "a placeholder"),
])
def test_grafana_needs_a_password_of_its_own_with_the_observability_profile(tmp_path, password, words):
    _, problems = load(tmp_path, {"KITTY_COMPOSE_PROFILES": "observability", "GRAFANA_ADMIN_PASSWORD": password})
    problem = only(problems, "GRAFANA_ADMIN_PASSWORD")
    assert problem.is_error and words in problem.message
    assert "GRAFANA_ADMIN_PASSWORD" in problem.fix and problem.runbook is Runbook.CONFIGURATION


def test_grafana_password_is_not_required_without_its_profile(tmp_path):
    _, problems = load(tmp_path, {"KITTY_COMPOSE_PROFILES": "app"})
    assert problems == []


@pytest.mark.parametrize(("password", "words"), [
    (None, "not set: the rabbitmq profile would start a broker that refuses to run"),
    ("guest", "known to anyone"),
    ("changeme", "known to anyone"),
])
def test_rabbitmq_needs_a_password_of_its_own_with_its_profile(tmp_path, password, words):
    _, problems = load(tmp_path, {"KITTY_COMPOSE_PROFILES": "rabbitmq", "RABBITMQ_DEFAULT_PASS": password})
    problem = only(problems, "RABBITMQ_DEFAULT_PASS")
    assert problem.is_error and words in problem.message and "RABBITMQ_DEFAULT_PASS" in problem.fix


def test_rabbitmq_password_is_not_required_without_its_profile(tmp_path):
    _, problems = load(tmp_path, {"KITTY_COMPOSE_PROFILES": "brain", "RABBITMQ_DEFAULT_PASS": None})
    assert problems == []
