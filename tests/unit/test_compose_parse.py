"""compose: the pure parts (model, inspect and ps parsing, version, argv/environment of commands)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from kitty_ops.config import ComposeSettings
from kitty_ops.containers.compose import (
    Compose,
    ContainerState,
    Port,
    ServiceModel,
    StackModel,
    major_version,
    parse_inspect,
    parse_model,
    parse_ps_ids,
)

# Shaped like `docker compose config --format json` (postgres captured from compose v2.40.3).
CONFIG = {
    "name": "kt",
    "services": {
        "postgres": {
            "command": None, "entrypoint": None,
            "environment": {"POSTGRES_DB": "kitty", "POSTGRES_PASSWORD": "s3cret",
                            "POSTGRES_USER": "kitty"},
            "healthcheck": {"test": ["CMD-SHELL", "pg_isready -h 127.0.0.1"], "timeout": "3s",
                            "interval": "5s", "retries": 5, "start_period": "1m0s"},
            "image": "postgres:16-alpine",
            "networks": {"default": None},
            "ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 5432,
                       "published": "5432", "protocol": "tcp"}],
            "restart": "unless-stopped",
            "volumes": [{"type": "volume", "source": "postgres-data",
                         "target": "/var/lib/postgresql/data", "volume": {}}],
        },
        "brain": {
            "image": "kitty/brain:latest",
            "labels": {"kitty-ops.needs": "llama:*"},
            "depends_on": {"postgres": {"condition": "service_healthy", "required": True}},
            "healthcheck": {"test": ["CMD", "curl", "-fsS", "http://127.0.0.1:8000/health"]},
        },
    },
}


def config_with(**services: dict) -> dict:
    data = copy.deepcopy(CONFIG)
    data["services"].update(services)
    return data


# ------------------------------------------------------------------------------- parse_model

def test_parse_model_project_and_services():
    model = parse_model(CONFIG)
    assert isinstance(model, StackModel)
    assert model.project == "kt"
    assert set(model.services) == {"postgres", "brain"}
    pg = model.services["postgres"]
    assert isinstance(pg, ServiceModel)
    assert pg.name == "postgres"
    assert pg.image == "postgres:16-alpine"


def test_parse_model_ports():
    pg = parse_model(CONFIG).services["postgres"]
    assert pg.ports == (Port(host_ip="127.0.0.1", published=5432, target=5432),)
    assert isinstance(pg.ports[0].published, int)
    assert isinstance(pg.ports[0].target, int)
    assert parse_model(CONFIG).services["brain"].ports == ()


def test_parse_model_port_without_host_ip_binds_everywhere_and_unpublished_is_skipped():
    data = config_with(web={"image": "nginx", "ports": [
        {"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"},
        {"mode": "ingress", "target": 9000, "protocol": "tcp"},  # no published port: random
    ]})
    assert parse_model(data).services["web"].ports == (Port("0.0.0.0", 8080, 80),)


def test_parse_model_published_as_int_and_port_ranges():
    # Early compose v2 printed `published` as a number; a range cannot be probed and is skipped.
    data = config_with(web={"image": "nginx", "ports": [
        {"mode": "ingress", "host_ip": "127.0.0.1", "target": 80, "published": 8080},
        {"mode": "ingress", "host_ip": "127.0.0.1", "target": 81, "published": "9000-9001"},
    ]})
    assert parse_model(data).services["web"].ports == (Port("127.0.0.1", 8080, 80),)


def test_parse_model_healthcheck_present():
    model = parse_model(CONFIG)
    assert model.services["postgres"].has_healthcheck is True
    assert model.services["brain"].has_healthcheck is True


@pytest.mark.parametrize("healthcheck", [
    {"test": ["NONE"]},
    {"disable": True},
    {"test": ["CMD", "true"], "disable": True},
    {"test": []},
    None,
], ids=["test-NONE", "disable", "disable-with-test", "empty-test", "null"])
def test_parse_model_disabled_healthcheck_counts_as_none(healthcheck):
    data = config_with(redis={"image": "redis:7", "healthcheck": healthcheck})
    assert parse_model(data).services["redis"].has_healthcheck is False


def test_parse_model_no_healthcheck_key_is_no_healthcheck():
    data = config_with(redis={"image": "redis:7"})
    assert parse_model(data).services["redis"].has_healthcheck is False


def test_parse_model_needs_from_label():
    model = parse_model(CONFIG)
    assert model.services["brain"].needs == ("llama:*",)
    assert model.services["postgres"].needs == ()


def test_parse_model_needs_label_with_several_entries_and_spaces():
    data = config_with(cad={"image": "cad", "labels": {"kitty-ops.needs": " llama:q4 , images-api,,"}})
    assert parse_model(data).services["cad"].needs == ("llama:q4", "images-api")


def test_parse_model_needs_from_label_list_form():
    data = config_with(cad={"image": "cad", "labels": ["kitty-ops.needs=llama:f16", "other=x"]})
    assert parse_model(data).services["cad"].needs == ("llama:f16",)


def test_parse_model_depends_on_conditions():
    model = parse_model(CONFIG)
    assert dict(model.services["brain"].depends_on) == {"postgres": "service_healthy"}
    assert dict(model.services["postgres"].depends_on) == {}


def test_parse_model_depends_on_without_condition_means_started():
    data = config_with(gateway={"image": "gw", "depends_on": {
        "brain": {"condition": "service_healthy", "required": True},
        "migrate": {"condition": "service_completed_successfully", "required": True},
        "redis": None,
    }})
    assert dict(parse_model(data).services["gateway"].depends_on) == {
        "brain": "service_healthy", "migrate": "service_completed_successfully",
        "redis": "service_started"}


def test_parse_model_drops_an_optional_dependency_on_a_service_compose_did_not_enable():
    # cad needs whichever object store runs: the other one's profile is off (shape of compose v2.40.3).
    data = config_with(rustfs={"image": "rustfs/rustfs:1.0.0-rc.3"}, cad={"image": "cad", "depends_on": {
        "rustfs": {"condition": "service_healthy", "required": False},
        "minio": {"condition": "service_healthy", "required": False},
        "brain": {"condition": "service_healthy", "required": True},
    }})
    assert dict(parse_model(data).services["cad"].depends_on) == {
        "rustfs": "service_healthy", "brain": "service_healthy"}


def test_parse_model_keeps_environment():
    pg = parse_model(CONFIG).services["postgres"]
    assert dict(pg.environment) == {"POSTGRES_DB": "kitty", "POSTGRES_PASSWORD": "s3cret",
                                    "POSTGRES_USER": "kitty"}
    assert pg.environment["POSTGRES_USER"] == "kitty"
    assert dict(parse_model(CONFIG).services["brain"].environment) == {}


def test_parse_model_environment_drops_unset_values():
    data = config_with(app={"image": "app", "environment": {"SET": "1", "UNSET": None}})
    assert dict(parse_model(data).services["app"].environment) == {"SET": "1"}


def test_secrets_never_appear_in_repr_or_str():
    model = parse_model(CONFIG)
    pg = model.services["postgres"]
    assert pg.environment["POSTGRES_PASSWORD"] == "s3cret"  # kept...
    for text in (repr(pg), str(pg), repr(model), str(model), f"{pg}", f"{model!r}"):
        assert "s3cret" not in text  # ...but never shown
        assert "POSTGRES_PASSWORD" not in text
    assert "postgres:16-alpine" in repr(pg)  # the repr itself still works


def test_parse_model_empty_or_missing_services():
    assert parse_model({"name": "kt", "services": {}}) == StackModel("kt", {})
    assert parse_model({}) == StackModel("", {})


def test_parse_model_accepts_the_json_text_of_real_output():
    model = parse_model(json.loads(json.dumps(CONFIG)))
    assert model.services["postgres"].ports[0].published == 5432


# ----------------------------------------------------------------------------- parse_inspect

def container(cid: str, service: str, project: str = "kt", status: str = "running",
              health: dict | None = None, exit_code: int = 0, restarts: int = 0,
              oneoff: bool = False) -> dict:
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": service,
              "com.docker.compose.oneoff": "True" if oneoff else "False",
              "com.docker.compose.container-number": "1"}
    state = {"Status": status, "Running": status == "running", "ExitCode": exit_code,
             "StartedAt": "2025-01-02T03:04:05.123456789Z", "FinishedAt": "0001-01-01T00:00:00Z"}
    if health is not None:
        state["Health"] = health
    return {"Id": cid, "Name": f"/{project}-{service}-1", "RestartCount": restarts,
            "Config": {"Image": f"{service}:latest", "Labels": labels}, "State": state}


PG_ID = "a1b2c3d4e5f6" + "0" * 52
BRAIN_ID = "f0e1d2c3b4a5" + "1" * 52


def test_parse_inspect_running_healthy_container():
    health = {"Status": "healthy", "FailingStreak": 0,
              "Log": [{"Start": "x", "End": "y", "ExitCode": 0,
                       "Output": "127.0.0.1:5432 - accepting connections\n"}]}
    states = parse_inspect([container(PG_ID, "postgres", health=health, restarts=2)], "kt")
    assert set(states) == {"postgres"}
    pg = states["postgres"]
    assert isinstance(pg, ContainerState)
    assert pg.service == "postgres"
    assert pg.id == "a1b2c3d4e5f6"  # short id
    assert pg.status == "running"
    assert pg.health == "healthy"
    assert pg.exit_code == 0
    assert pg.restarts == 2
    assert pg.started_at == "2025-01-02T03:04:05.123456789Z"
    assert pg.last_probe == "exit 0: 127.0.0.1:5432 - accepting connections"
    assert pg.describe() == "running (healthy)"


def test_parse_inspect_last_probe_is_the_last_log_entry():
    health = {"Status": "unhealthy", "FailingStreak": 3, "Log": [
        {"ExitCode": 0, "Output": "ok"},
        {"ExitCode": 1, "Output": "curl: (7) Failed to connect\n  to 127.0.0.1 port 8000\n"},
    ]}
    brain = parse_inspect([container(BRAIN_ID, "brain", health=health)], "kt")["brain"]
    assert brain.health == "unhealthy"
    assert brain.last_probe == "exit 1: curl: (7) Failed to connect to 127.0.0.1 port 8000"
    assert brain.describe() == "running (unhealthy)"


def test_parse_inspect_probe_without_output_and_long_output():
    silent = {"Status": "starting", "Log": [{"ExitCode": 1, "Output": ""}]}
    assert parse_inspect([container(PG_ID, "postgres", health=silent)], "kt")["postgres"].last_probe \
        == "exit 1"
    noisy = {"Status": "unhealthy", "Log": [{"ExitCode": 2, "Output": "x" * 1000}]}
    probe = parse_inspect([container(PG_ID, "postgres", health=noisy)], "kt")["postgres"].last_probe
    assert probe == "exit 2: " + "x" * 300


def test_parse_inspect_without_healthcheck():
    state = parse_inspect([container(PG_ID, "redis")], "kt")["redis"]
    assert state.health == ""
    assert state.last_probe == ""
    assert state.describe() == "running"


def test_parse_inspect_exited_container():
    state = parse_inspect([container(PG_ID, "migrate", status="exited", exit_code=137)], "kt")["migrate"]
    assert state.status == "exited"
    assert state.exit_code == 137
    assert state.describe() == "exited with code 137"
    dead = parse_inspect([container(PG_ID, "x", status="dead", exit_code=1)], "kt")["x"]
    assert dead.describe() == "dead with code 1"


def test_parse_inspect_other_states_describe():
    starting = {"Status": "starting", "Log": []}
    assert parse_inspect([container(PG_ID, "pg", status="restarting", health=starting)], "kt")["pg"] \
        .describe() == "restarting (starting)"
    assert parse_inspect([container(PG_ID, "pg", status="created")], "kt")["pg"].describe() == "created"


def test_parse_inspect_ignores_other_projects_and_one_off_containers():
    items = [
        container(PG_ID, "postgres", project="kt"),
        container("9" * 64, "postgres", project="other", status="exited", exit_code=3),
        container(BRAIN_ID, "brain", project="kt"),
        # `docker compose run brain ...`: listed last so that it would win if it were not ignored.
        container("8" * 64, "brain", project="kt", oneoff=True, status="exited", exit_code=1),
        container("5" * 64, "migrate", project="kt", oneoff=True, status="exited", exit_code=0),
        {"Id": "7" * 64, "Config": {"Labels": {}}, "State": {"Status": "running"}},  # not compose
        {"Id": "6" * 64, "Config": {"Labels": None}, "State": {"Status": "running"}},
    ]
    states = parse_inspect(items, "kt")
    assert set(states) == {"postgres", "brain"}
    assert states["postgres"].id == PG_ID[:12]
    assert states["postgres"].status == "running"
    assert states["brain"].id == BRAIN_ID[:12]  # not the one-off's
    assert states["brain"].status == "running"


def test_parse_inspect_project_must_match_exactly():
    assert parse_inspect([container(PG_ID, "postgres", project="kt2")], "kt") == {}
    assert parse_inspect([container(PG_ID, "postgres", project="kt")], "KT") == {}
    assert parse_inspect([], "kt") == {}


# ------------------------------------------------------------------------------ parse_ps_ids

PS_LINES = [
    {"Command": "\"docker-entrypoint.s…\"", "CreatedAt": "2025-01-02 03:04:05 +0000 UTC",
     "ExitCode": 0, "Health": "healthy", "ID": "a1b2c3d4e5f6", "Image": "postgres:16-alpine",
     "Name": "kt-postgres-1", "Project": "kt", "Service": "postgres", "State": "running",
     "Status": "Up 2 minutes (healthy)"},
    {"Command": "\"uvicorn\"", "ExitCode": 0, "Health": "", "ID": "f0e1d2c3b4a5",
     "Image": "kitty/brain:latest", "Name": "kt-brain-1", "Project": "kt", "Service": "brain",
     "State": "exited", "Status": "Exited (1) 5 seconds ago"},
]


def test_parse_ps_ids_json_lines():
    text = "\n".join(json.dumps(item) for item in PS_LINES) + "\n"
    assert parse_ps_ids(text) == {"postgres": "a1b2c3d4e5f6", "brain": "f0e1d2c3b4a5"}


def test_parse_ps_ids_json_lines_with_blank_lines():
    text = "\n" + json.dumps(PS_LINES[0]) + "\n\n" + json.dumps(PS_LINES[1]) + "\n\n"
    assert parse_ps_ids(text) == {"postgres": "a1b2c3d4e5f6", "brain": "f0e1d2c3b4a5"}


def test_parse_ps_ids_json_array_of_older_compose():
    assert parse_ps_ids(json.dumps(PS_LINES)) == {"postgres": "a1b2c3d4e5f6", "brain": "f0e1d2c3b4a5"}


def test_parse_ps_ids_single_line():
    assert parse_ps_ids(json.dumps(PS_LINES[0])) == {"postgres": "a1b2c3d4e5f6"}


@pytest.mark.parametrize("text", ["", "\n", "   \n  ", "[]"])
def test_parse_ps_ids_empty(text):
    assert parse_ps_ids(text) == {}


def test_parse_ps_ids_skips_items_without_service_or_id():
    text = json.dumps([{"Service": "", "ID": "x"}, {"Service": "a", "ID": ""}, {"Name": "n"},
                       {"Service": "redis", "ID": "123456789abc"}])
    assert parse_ps_ids(text) == {"redis": "123456789abc"}


# ----------------------------------------------------------------------------- major_version

@pytest.mark.parametrize("text, major", [
    ("2.40.3", 2),
    ("2.40.3\n", 2),
    ("v2.29.1-desktop.1", 2),
    ("Docker Compose version v2.40.3", 2),
    ("1.29.2", 1),
    ("docker-compose version 1.29.2, build 5becea4c", 1),
    ("garbage", None),
    ("", None),
])
def test_major_version(text, major):
    assert major_version(text) == major


# ----------------------------------------------------------------------- Compose.argv / env

def settings(tmp_path: Path, profiles: tuple[str, ...] = ("app",)) -> ComposeSettings:
    return ComposeSettings(
        enabled=True,
        files=(tmp_path / "infra" / "docker-compose.yml", tmp_path / "override.yml"),
        project="kt",
        profiles=profiles,
        health_timeout=60.0,
        stop_timeout=5,
        env_file=tmp_path / ".env",
    )


def test_compose_argv_names_project_env_file_files_and_profiles(tmp_path):
    compose = Compose(settings(tmp_path))
    f1, f2 = str(tmp_path / "infra" / "docker-compose.yml"), str(tmp_path / "override.yml")
    assert compose.project == "kt"
    assert compose.argv("up", "--detach", "brain") == [
        "docker", "compose", "-p", "kt", "--env-file", str(tmp_path / ".env"),
        "-f", f1, "-f", f2, "--profile", "app", "up", "--detach", "brain"]
    assert all(isinstance(a, str) for a in compose.argv("ps"))


def test_compose_argv_several_profiles_and_none(tmp_path):
    argv = Compose(settings(tmp_path, ("app", "observability"))).argv("ps")
    assert argv[-5:] == ["--profile", "app", "--profile", "observability", "ps"]
    argv = Compose(settings(tmp_path, ())).argv("ps")
    assert "--profile" not in argv
    assert argv[-1] == "ps"


def test_compose_argv_all_profiles(tmp_path):
    compose = Compose(settings(tmp_path), all_profiles=True)
    f1, f2 = str(tmp_path / "infra" / "docker-compose.yml"), str(tmp_path / "override.yml")
    assert compose.argv("stop") == [
        "docker", "compose", "-p", "kt", "--env-file", str(tmp_path / ".env"),
        "-f", f1, "-f", f2, "--profile", "*", "stop"]
    assert "app" not in compose.argv("stop")


def test_compose_environment_drops_ambient_compose_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "someone-elses")
    monkeypatch.setenv("COMPOSE_FILE", "/elsewhere/compose.yml")
    monkeypatch.setenv("COMPOSE_PROFILES", "everything")
    monkeypatch.setenv("COMPOSE_ENV_FILES", "/elsewhere/.env")
    monkeypatch.setenv("KITTY_ENV_FILE", "/stale/.env")
    monkeypatch.setenv("KITTY_TEST_UNRELATED", "kept")
    env = Compose(settings(tmp_path)).environment()
    for var in ("COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "COMPOSE_PROFILES", "COMPOSE_ENV_FILES"):
        assert var not in env
    assert env["KITTY_ENV_FILE"] == str(tmp_path / ".env")
    assert env["KITTY_TEST_UNRELATED"] == "kept"
    import os
    assert os.environ["COMPOSE_PROJECT_NAME"] == "someone-elses"  # the process's own is untouched
