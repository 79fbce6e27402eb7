"""Compose.pull_missing against a stand-in `docker` on PATH: which images are pulled (only those
`docker image inspect` does not find), one progress event per image, all at once, each with its
deadline, and what a failed pull reports. The real engine's side is tests/integration/test_images.py."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from kitty_ops.config import ComposeSettings
from kitty_ops.containers.compose import Compose, ServiceModel, StackModel

FAKE_DOCKER = """#!{python}
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
with open(os.path.join(here, "calls.log"), "a") as log:
    log.write(json.dumps(args) + "\\n")
local = set(open(os.path.join(here, "local")).read().split())
if args[:2] == ["image", "inspect"]:
    refs = [a for a in args[2:] if not a.startswith("--") and a != "{{{{.Id}}}}"]
    missing = [r for r in refs if r not in local]
    for r in missing:
        print(f"Error response from daemon: No such image: {{r}}", file=sys.stderr)
    sys.exit(1 if missing else 0)
if args[0] == "pull":
    image = args[-1]
    behaviour = json.load(open(os.path.join(here, "pulls.json"))).get(image, {{}})
    time.sleep(behaviour.get("seconds", 0))
    for line in behaviour.get("stderr", []):
        print(line, file=sys.stderr)
    sys.exit(behaviour.get("code", 0))
if args[0] == "compose" and "--no-interpolate" in args:
    print(open(os.path.join(here, "sources.json")).read())
    sys.exit(0)
sys.exit(2)
"""


class Events:
    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def event(self, name: str, message: str) -> None:
        self.seen.append((name, message))


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable))
    script.chmod(0o755)
    (bin_dir / "local").write_text("")
    (bin_dir / "pulls.json").write_text("{}")
    (bin_dir / "sources.json").write_text(json.dumps({"services": {}}))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def calls(bin_dir: Path) -> list[list[str]]:
    path = bin_dir / "calls.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def pulled(bin_dir: Path) -> list[str]:
    return sorted(c[-1] for c in calls(bin_dir) if c[0] == "pull")


def compose(tmp_path: Path) -> Compose:
    env = tmp_path / ".env"
    env.write_text("")
    files = (tmp_path / "docker-compose.yml",)
    found = Compose(ComposeSettings(enabled=True, files=files, project="kt", profiles=(), env_file=env,
                                    health_timeout=60, stop_timeout=5))
    found.engine = None  # the CLI path, so the fake docker answers (the engine's: test_engine_paths.py)
    return found


def model(**images: str) -> StackModel:
    return StackModel("kt", {name: ServiceModel(name, image, {}, True, (), ()) for name, image in images.items()})


def test_local_images_are_never_pulled_and_nothing_is_announced(fake_docker, tmp_path):
    (fake_docker / "local").write_text("redis:7.4-alpine\npostgres:16-alpine\n")
    events = Events()
    problems = compose(tmp_path).pull_missing(model(redis="redis:7.4-alpine", postgres="postgres:16-alpine"),
                                              ["redis", "postgres"], events)
    assert problems == [] and events.seen == [] and pulled(fake_docker) == []
    assert len(calls(fake_docker)) == 1  # one inspect of every image at once


def test_only_missing_images_of_the_services_to_start_are_pulled_once_each(fake_docker, tmp_path):
    (fake_docker / "local").write_text("redis:7.4-alpine\n")
    stack = model(redis="redis:7.4-alpine", brain="kitty/brain:1", voice="kitty/brain:1",
                  rabbitmq="rabbitmq:4.3-management-alpine", grafana="grafana/grafana:11.3.0")
    events = Events()
    problems = compose(tmp_path).pull_missing(stack, ["redis", "brain", "voice", "rabbitmq"], events)
    assert problems == []
    assert pulled(fake_docker) == ["kitty/brain:1", "rabbitmq:4.3-management-alpine"]  # not grafana: not started
    assert sorted(events.seen) == [("brain", "pulling kitty/brain:1 for brain, voice"),
                                   ("rabbitmq", "pulling rabbitmq:4.3-management-alpine for rabbitmq")]


def test_pull_policy_never_or_build_is_left_to_compose(fake_docker, tmp_path):
    stack = StackModel("kt", {"app": ServiceModel("app", "kitty/app:1", {}, True, (), (), pull_policy="never"),
                              "web": ServiceModel("web", "kitty/web:1", {}, True, (), (), pull_policy="build")})
    assert compose(tmp_path).pull_missing(stack, ["app", "web"], Events()) == []
    assert calls(fake_docker) == []


def test_a_failed_pull_names_service_image_variable_and_the_last_registry_line(fake_docker, tmp_path):
    denied = ("Error response from daemon: pull access denied for kitty/brain, repository does not exist "
              "or may require 'docker login': denied: requested access to the resource is denied")
    (fake_docker / "pulls.json").write_text(json.dumps({"kitty/brain:1": {"code": 1, "stderr": [
        "Using default tag: latest", denied, ""]}}))
    (fake_docker / "sources.json").write_text(json.dumps({"services": {
        "brain": {"image": "${BRAIN_IMAGE:-kitty/brain:${KITTY_APP_TAG:-latest}}"}}}))
    problems = compose(tmp_path).pull_missing(model(brain="kitty/brain:1", redis="redis:7"), ["brain", "redis"],
                                              Events())
    assert len(problems) == 1
    problem = problems[0]
    assert problem.is_error and problem.subject == "BRAIN_IMAGE or KITTY_APP_TAG"
    assert problem.message == f"cannot pull kitty/brain:1 for service brain: {denied}"
    assert problem.runbook.path == "ops/runbooks/container-failed.md"


def test_pulls_run_at_once_and_each_has_a_deadline(fake_docker, tmp_path):
    (fake_docker / "pulls.json").write_text(json.dumps({
        "a/one:1": {"seconds": 1}, "a/two:1": {"seconds": 1}, "a/hangs:1": {"seconds": 60}}))
    began = time.monotonic()
    problems = compose(tmp_path).pull(
        {"a/one:1": ["one"], "a/two:1": ["two"], "a/hangs:1": ["hangs"]}, Events(), timeout=3)
    took = time.monotonic() - began
    assert took < 6  # the three at once, the hanging one ended at its 3 s deadline (not 60 s)
    assert [p.message for p in problems] == [
        "cannot pull a/hangs:1 for service hangs: `docker pull a/hangs:1` did not finish within 3s"]
