"""The image rule (kitty_ops.containers.images): which references a stack should not run, and
what the operator reads about them; and the stack's own compose file and .env.example keep to it."""

from __future__ import annotations

import re

import pytest

from kitty_ops.containers import images
from kitty_ops.problems import Severity
from tests.harness import REPO

# ------------------------------------------------------------------------------------ parse


@pytest.mark.parametrize("reference, registry, repository, tag, digest", [
    ("redis", "docker.io", "library/redis", "", ""),
    ("redis:7.4-alpine", "docker.io", "library/redis", "7.4-alpine", ""),
    ("minio/minio:latest", "docker.io", "minio/minio", "latest", ""),
    ("docker.io/minio/minio", "docker.io", "minio/minio", "", ""),
    ("index.docker.io/library/redis:7", "docker.io", "library/redis", "7", ""),
    ("quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z", "quay.io", "minio/minio", "RELEASE.2025-09-07T16-13-09Z", ""),
    ("registry:5000/name", "registry:5000", "name", "", ""),
    ("registry:5000/team/name:1.2", "registry:5000", "team/name", "1.2", ""),
    ("localhost/brain:3", "localhost", "brain", "3", ""),
    ("kitty/brain:latest", "docker.io", "kitty/brain", "latest", ""),
    ("redis@sha256:" + "a" * 64, "docker.io", "library/redis", "", "sha256:" + "a" * 64),
    ("redis:latest@sha256:" + "b" * 64, "docker.io", "library/redis", "latest", "sha256:" + "b" * 64),
])
def test_parse_follows_dockers_reference_grammar(reference, registry, repository, tag, digest):
    assert images.parse(reference) == images.Reference(registry, repository, tag, digest)


# ------------------------------------------------------------------------------------ judge


@pytest.mark.parametrize("reference", [
    "redis:7.4-alpine", "postgres:16-alpine", "eclipse-mosquitto:2", "rabbitmq:4.3-management-alpine",
    "prom/prometheus:v2.55.1", "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z",
    "registry:5000/team/name:1.2", "kitty/brain:2026.06.1",
    "redis@sha256:" + "a" * 64,  # a digest pins
    "kitty/brain:latest@sha256:" + "b" * 64,  # even under a :latest tag
    "",  # a service that builds its image
])
def test_pinned_images_are_fine(reference):
    assert images.judge(reference) is None


@pytest.mark.parametrize("reference", ["kitty/brain:latest", "redis:latest", "quay.io/minio/minio:latest",
                                       "registry:5000/name:latest"])
def test_latest_is_a_warning_with_a_pin_as_fix(reference):
    verdict = images.judge(reference)
    assert verdict is not None and verdict.severity is Severity.WARNING
    assert "says :latest" in verdict.message
    name = images.parse(reference).name
    assert f"{name}:<version>" in verdict.fix and f"{name}@sha256:" in verdict.fix


@pytest.mark.parametrize("reference", ["redis", "kitty/brain", "registry:5000/name", "localhost:5000/a/b"])
def test_no_tag_is_a_warning_and_a_registry_port_is_not_a_tag(reference):
    verdict = images.judge(reference)
    assert verdict is not None and verdict.severity is Severity.WARNING
    assert "has no tag" in verdict.message


@pytest.mark.parametrize("reference", [
    "minio/minio:latest", "minio/minio", "minio/minio:RELEASE.2025-09-07T16-13-09Z",
    "docker.io/minio/minio:RELEASE.2024-01-01T00-00-00Z", "index.docker.io/minio/minio",
    "minio/minio@sha256:" + "c" * 64,  # a digest of a repository that is gone is still gone
])
def test_docker_hubs_minio_is_an_error_in_any_tag_with_both_fixes(reference):
    verdict = images.judge(reference)
    assert verdict is not None and verdict.severity is Severity.ERROR
    assert "no longer published" in verdict.message
    assert "KITTY_OBJECT_STORE=rustfs" in verdict.fix
    assert "MINIO_IMAGE=quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z" in verdict.fix


# ---------------------------------------------------------------------------------- problems


def test_variables_of_an_image_expression_outermost_first():
    assert images.variables("${BRAIN_IMAGE:-kitty/brain:${KITTY_APP_TAG:-latest}}") == ("BRAIN_IMAGE", "KITTY_APP_TAG")
    assert images.variables("${REGISTRY}/brain:${TAG}") == ("REGISTRY", "TAG")
    assert images.variables("redis:7") == ()


def test_problems_name_service_image_variable_fix_and_runbook():
    resolved = {"redis": "redis:7.4-alpine", "minio": "minio/minio:latest", "brain": "kitty/brain:latest",
                "web": "nginx"}
    sources = {"redis": "${REDIS_IMAGE:-redis:7.4-alpine}", "minio": "${MINIO_IMAGE:-minio/minio:latest}",
               "brain": "${BRAIN_IMAGE:-kitty/brain:${KITTY_APP_TAG:-latest}}", "web": "nginx"}
    found = {p.message.split(":")[0]: p for p in images.problems(resolved, sources, ["infra/compose/docker-compose.yml"])}
    assert set(found) == {"service minio", "service brain", "service web"}  # redis is pinned

    minio = found["service minio"]
    assert minio.is_error and minio.subject == "MINIO_IMAGE"
    assert "minio/minio:latest is no longer published" in minio.message
    assert "KITTY_OBJECT_STORE=rustfs" in minio.fix
    assert minio.runbook.path == "ops/runbooks/container-failed.md"

    brain = found["service brain"]
    assert not brain.is_error and brain.subject == "BRAIN_IMAGE or KITTY_APP_TAG"
    assert "kitty/brain:latest says :latest" in brain.message
    assert brain.fix.endswith("in BRAIN_IMAGE or KITTY_APP_TAG")

    web = found["service web"]  # no variable: the compose file's key
    assert web.subject == "services.web.image in infra/compose/docker-compose.yml"
    assert "has no tag" in web.message


def test_a_failed_pull_names_service_image_and_the_registrys_words():
    error = ('Error response from daemon: pull access denied for kitty-ops-test/does-not-exist, repository '
             'does not exist or may require \'docker login\'')
    problem = images.pull_problem("kitty-ops-test/does-not-exist:1", ["brain", "gateway"], error, "BRAIN_IMAGE")
    assert problem.is_error and problem.subject == "BRAIN_IMAGE"
    assert problem.message == f"cannot pull kitty-ops-test/does-not-exist:1 for service brain, gateway: {error}"
    assert "BRAIN_IMAGE" in problem.fix and "docker pull kitty-ops-test/does-not-exist:1" in problem.fix
    assert problem.runbook.path == "ops/runbooks/container-failed.md"


def test_a_failed_pull_of_an_unpublished_image_gives_its_own_fix():
    problem = images.pull_problem("minio/minio:latest", ["minio"], "manifest unknown", "MINIO_IMAGE")
    assert "KITTY_OBJECT_STORE=rustfs" in problem.fix and "manifest unknown" in problem.message


# ------------------------------------------------------------------ the stack's own references


def _defaults(text: str) -> dict[str, str]:
    """VAR -> its default in the `${VAR:-default}` image lines, nested defaults resolved."""
    found = {}
    for expression in re.findall(r"^\s+image: (.+)$", text, re.M):
        value = expression
        while "${" in value:  # innermost first
            value = re.sub(r"\$\{[A-Z0-9_]+:-([^${}]*)\}", r"\1", value)
        outer = images.variables(expression)
        if outer:
            found[outer[0]] = value
    return found


def test_infrastructure_images_of_the_compose_file_and_env_example_are_pinned():
    compose = _defaults((REPO / "infra" / "compose" / "docker-compose.yml").read_text())
    example = dict(re.findall(r"^([A-Z0-9_]+_IMAGE)=(.+)$", (REPO / ".env.example").read_text(), re.M))
    apps = {f"{s.upper()}_IMAGE" for s in ("brain", "gateway", "cad", "fabrication", "safety", "voice", "ui")}
    assert {"REDIS_IMAGE", "POSTGRES_IMAGE", "RABBITMQ_IMAGE"} <= set(compose)  # the scan works
    for source in (compose, example):
        unpinned = {var: image for var, image in source.items() if var not in apps and images.judge(image)}
        assert unpinned == {}
    assert compose["RABBITMQ_IMAGE"] == "rabbitmq:4.3-management-alpine"
    # The app images are the operator's own builds: one version variable for the set.
    assert all(compose[var].endswith(":latest") for var in apps)  # KITTY_APP_TAG's default, with a warning
    assert "\nKITTY_APP_TAG=" in (REPO / ".env.example").read_text()


def test_the_doctors_images_row_fails_on_an_unpublished_image_and_warns_on_latest():
    from kitty_ops.rescue import doctor
    files = ["docker-compose.yml"]
    assert doctor._images([], 5, True).status == "ok"
    latest = images.problems({"brain": "kitty/brain:latest"}, {}, files)
    row = doctor._images(latest, 5, True)
    assert (row.status, row.runbook.path) == ("warn", "ops/runbooks/container-failed.md")
    gone = images.problems({"brain": "kitty/brain:latest", "minio": "minio/minio:latest"}, {}, files)
    row = doctor._images(gone, 5, True)
    assert row.status == "fail" and "minio/minio:latest" in row.detail and "KITTY_OBJECT_STORE=rustfs" in row.detail
    assert "kitty/brain" not in row.detail  # the failure is what the row shows
    assert doctor._images(gone, 5, False).status == "warn"  # container tier off: not required
