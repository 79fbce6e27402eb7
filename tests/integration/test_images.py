"""Images against the real Docker engine and compose v2: a start pulls what is missing before
anything starts, and a pull that fails (no registry is reachable here, which is what these tests
need) starts nothing, not even the llama servers; validate and doctor judge the images compose
resolves. The stack's own services run the locally built test image, which is never pulled."""

from __future__ import annotations

import json
import socket

import pytest

pytestmark = pytest.mark.docker

MISSING = "kitty-ops-test/does-not-exist:1"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_pull_that_fails_names_service_image_and_error_and_starts_nothing(stack):
    stack.add_override(f"services:\n  redis:\n    image: {MISSING}\n")
    ports = stack.stack_env({"q4": ""}, profiles="")

    done = stack.run("start", "--json", timeout=180)
    assert done.returncode == 5, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is False and out["components"] == []
    assert len(out["problems"]) == 1, out["problems"]
    problem = out["problems"][0]
    assert problem["severity"] == "error"
    assert problem["message"].startswith(f"cannot pull {MISSING} for service redis: ")
    assert "Error response from daemon" in problem["message"]  # docker's (the registry's) own words
    assert problem["subject"].startswith("services.redis.image in ")  # set literally in the override
    assert "override-0.yml" in problem["subject"]
    assert f"docker pull {MISSING}" in problem["fix"]
    assert problem["runbook"] == "ops/runbooks/container-failed.md"
    # One pull announced: the locally built image of every other service is never pulled.
    pulls = [line for line in done.stderr.splitlines() if "pulling " in line]
    assert len(pulls) == 1 and f"pulling {MISSING} for redis" in pulls[0], done.stderr

    text = stack.run("start", timeout=180)
    assert text.returncode == 5
    assert f"cannot pull {MISSING} for service redis" in text.stderr
    assert "runbook: ops/runbooks/container-failed.md" in text.stderr
    assert "nothing started" in text.stderr

    assert stack.containers() == []  # no container of the project, in any state
    assert not list(stack.logs.glob("llamacpp-*"))  # q4 was never even spawned
    assert not listening(ports["q4"])


def test_validate_and_doctor_judge_the_resolved_images_and_start_gives_the_same_fix(stack):
    stack.add_override("services:\n  redis:\n    image: minio/minio:RELEASE.2025-04-22T22-12-26Z\n"
                       "  postgres:\n    image: kitty-ops-test/postgres:latest\n")
    stack.stack_env({"q4": ""}, profiles="")
    stack.env_file.chmod(0o600)

    code, out = stack.json("validate")
    assert code == 3, out
    mine = {p["message"].split(":")[0]: p for p in out["problems"] if p["message"].startswith("service ")}
    assert set(mine) == {"service redis", "service postgres"}  # the test image everywhere else is pinned
    redis, postgres = mine["service redis"], mine["service postgres"]
    assert redis["severity"] == "error" and "no longer published" in redis["message"]
    assert "KITTY_OBJECT_STORE=rustfs" in redis["fix"]
    assert "MINIO_IMAGE=quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z" in redis["fix"]
    assert postgres["severity"] == "warning" and "says :latest" in postgres["message"]
    assert postgres["subject"].startswith("services.postgres.image in ")

    done = stack.run("doctor", "--json", timeout=120)
    assert done.returncode == 1, done.stdout
    row = {c["name"]: c for c in json.loads(done.stdout)["checks"]}["images"]
    assert (row["required"], row["status"]) == (True, "fail"), row
    assert "KITTY_OBJECT_STORE=rustfs" in row["detail"]
    assert row["runbook"] == "ops/runbooks/container-failed.md"

    code, out = stack.json("start", timeout=180)  # nothing has minio/minio here: the pull says why
    assert code == 5, out
    problem = next(p for p in out["problems"] if "for service redis" in p["message"])
    assert "KITTY_OBJECT_STORE=rustfs" in problem["fix"]
    assert stack.containers() == []
