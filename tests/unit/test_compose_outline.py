"""kitty_ops.containers.outline: the health check's cached, secret-free outline of the compose model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kitty_ops.config import ComposeSettings
from kitty_ops.containers import outline as compose_outline
from kitty_ops.containers.compose import ComposeError, Port, ServiceModel, StackModel
from kitty_ops.problems import error
from kitty_ops.runbooks import Runbook

MODEL = StackModel("kt", {
    "postgres": ServiceModel("postgres", "postgres:16-alpine", {}, True, (), (Port("127.0.0.1", 5432, 5432),),
                             {"POSTGRES_PASSWORD": "s3cret-value"}),
    "brain": ServiceModel("brain", "kitty/brain:1", {"postgres": "service_healthy"}, True, ("llama:*",), ()),
})


def settings(tmp_path: Path, profiles: tuple[str, ...] = ()) -> ComposeSettings:
    compose = tmp_path / "docker-compose.yml"
    if not compose.exists():
        compose.write_text("services:\n  brain:\n    image: ${BRAIN_IMAGE:-kitty/brain:1}\n")
        (tmp_path / ".env").write_text("POSTGRES_PASSWORD=s3cret-value\n")
    return ComposeSettings(True, (compose,), "kt", profiles, 60.0, 10, tmp_path / ".env")


def touch_later(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_outline_round_trip_keeps_what_health_needs_and_drops_the_environment():
    back = compose_outline.from_outline(compose_outline.outline(MODEL))
    assert back.project == "kt"
    assert back.services["brain"].depends_on == {"postgres": "service_healthy"}
    assert back.services["brain"].needs == ("llama:*",)
    assert back.services["postgres"].ports == (Port("127.0.0.1", 5432, 5432),)
    assert back.services["postgres"].has_healthcheck is True
    assert back.services["postgres"].environment == {}


def test_key_follows_every_input_and_nothing_else(tmp_path):
    base = settings(tmp_path)
    env = {"BRAIN_IMAGE": "kitty/brain:1", "UNRELATED": "a"}
    first = compose_outline.key(base, env)
    assert first == compose_outline.key(base, {**env, "UNRELATED": "b"})  # not in the files
    assert first != compose_outline.key(base, {**env, "BRAIN_IMAGE": "kitty/brain:2"})  # interpolated
    assert first != compose_outline.key(settings(tmp_path, ("app",)), env)
    touch_later(base.files[0])
    second = compose_outline.key(base, env)
    assert second != first
    touch_later(base.env_file)
    assert compose_outline.key(base, env) != second


def test_key_is_none_when_a_compose_file_is_missing(tmp_path):
    base = settings(tmp_path)
    base.files[0].unlink()
    assert compose_outline.key(base, {}) is None


def test_cached_model_resolves_once_until_an_input_changes_and_stores_no_secret(tmp_path):
    base = settings(tmp_path)
    cache = tmp_path / ".logs" / "compose-outline.json"
    calls = []

    def resolve() -> StackModel:
        calls.append(1)
        return MODEL

    assert set(compose_outline.cached_model(cache, base, resolve).services) == {"postgres", "brain"}
    assert set(compose_outline.cached_model(cache, base, resolve).services) == {"postgres", "brain"}
    assert len(calls) == 1
    assert "s3cret-value" not in cache.read_text()
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    touch_later(base.files[0])
    compose_outline.cached_model(cache, base, resolve)
    assert len(calls) == 2


def test_a_failed_resolve_raises_and_caches_nothing(tmp_path):
    base = settings(tmp_path)
    cache = tmp_path / "compose-outline.json"

    def broken() -> StackModel:
        raise ComposeError(error("compose", "rejected", "fix it", Runbook.COMPOSE_FILE))

    with pytest.raises(ComposeError):
        compose_outline.cached_model(cache, base, broken)
    assert not cache.exists()
    cache.write_text("{not json")  # a damaged cache is resolved again, not trusted
    assert compose_outline.cached_model(cache, base, lambda: MODEL).project == "kt"
