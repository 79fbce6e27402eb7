"""Where the Docker engine is (kitty_ops.containers.engine.resolve), found as the docker CLI
finds it, and the memory figure as `docker stats` computes it. Pure: a fake config folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kitty_ops.containers.engine import DEFAULT_SOCKET, Address, memory_in_use, resolve


def context(config: Path, name: str, host: str, tls: bool = False) -> None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Endpoints": {"docker": {"Host": host}}}))
    if tls:
        (config / "contexts" / "tls" / digest / "docker").mkdir(parents=True)


def test_docker_host_wins_and_only_plain_endpoints_are_spoken(tmp_path):
    assert resolve({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}, tmp_path) == \
        Address(unix_path="/run/user/1000/docker.sock")
    assert resolve({"DOCKER_HOST": "tcp://10.0.0.5:2375"}, tmp_path) == Address(host="10.0.0.5", port=2375)
    assert resolve({"DOCKER_HOST": "tcp://10.0.0.5:2376", "DOCKER_TLS_VERIFY": "1"}, tmp_path) is None
    assert resolve({"DOCKER_HOST": "ssh://me@box"}, tmp_path) is None


def test_without_configuration_the_default_socket(tmp_path):
    assert resolve({}, tmp_path) == Address(unix_path=DEFAULT_SOCKET)
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text(json.dumps({"currentContext": "default"}))
    assert resolve({}, tmp_path) == Address(unix_path=DEFAULT_SOCKET)


def test_the_current_context_of_docker_desktop_is_followed(tmp_path):
    config = tmp_path / ".docker"
    context(config, "desktop-linux", "unix:///Users/me/.docker/run/docker.sock")
    (config / "config.json").write_text(json.dumps({"currentContext": "desktop-linux"}))
    assert resolve({}, tmp_path) == Address(unix_path="/Users/me/.docker/run/docker.sock")


def test_docker_context_and_docker_config_override_the_file(tmp_path):
    config = tmp_path / "elsewhere"
    context(config, "colima", "unix:///Users/me/.colima/default/docker.sock")
    context(config, "remote", "tcp://build-box:2376", tls=True)
    env = {"DOCKER_CONFIG": str(config)}
    assert resolve({**env, "DOCKER_CONTEXT": "colima"}, tmp_path) == \
        Address(unix_path="/Users/me/.colima/default/docker.sock")
    assert resolve({**env, "DOCKER_CONTEXT": "remote"}, tmp_path) is None  # TLS: the CLI does it
    assert resolve({**env, "DOCKER_CONTEXT": "no-such-context"}, tmp_path) is None


def test_memory_in_use_is_usage_less_inactive_page_cache():
    assert memory_in_use({"usage": 50_000_000, "stats": {"inactive_file": 8_000_000}}) == 42_000_000  # cgroup v2
    assert memory_in_use({"usage": 50_000_000, "stats": {"total_inactive_file": 10_000_000}}) == 40_000_000  # v1
    assert memory_in_use({"usage": 7_000_000, "stats": {}}) == 7_000_000
    assert memory_in_use({}) is None and memory_in_use(None) is None  # a stopped container
