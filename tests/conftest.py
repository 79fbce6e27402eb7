"""The pytest fixtures: a sandbox project, the test Docker engine and a stack project, each
cleaned up after its test (by kitty-ops itself, so teardown signals only processes proven ours).
The harness they build on is tests/harness.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness import ENGINE_SCRIPT, Project, StackProject


@pytest.fixture
def project(tmp_path: Path):
    proj = Project(tmp_path)
    yield proj
    # Safety net: whatever a test left running in its own project is stopped (by kitty-ops
    # itself, so even teardown signals only processes proven ours).
    if proj.env_file.exists():
        proj.run("stop", "--grace", "1", timeout=60)


@pytest.fixture(scope="session")
def docker_image() -> str:
    """A running Docker engine with compose v2 and the locally built test image (its tag).
    Brought up by the same script CI uses; a failure fails the test, never skips it."""
    done = subprocess.run(["bash", str(ENGINE_SCRIPT)], capture_output=True, text=True, timeout=1500)
    if done.returncode != 0:
        pytest.fail(f"no Docker engine for the container tests: {done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def stack(tmp_path: Path, docker_image: str):
    proj = StackProject(tmp_path, docker_image)
    yield proj
    if proj.env_file.exists():
        proj.run("stop", "--grace", "1", timeout=120)
        proj.compose("down", "--volumes", "--remove-orphans", "--timeout", "1", timeout=120)
