"""The two ways kitty-ops asks the Docker engine agree: its API over the socket (the default
wherever the engine is a unix socket or plain tcp) and the docker CLI (ssh:// and TLS
endpoints). Both against the real engine, on the same containers: the states they read, and
the stop-and-remove they do, touching only the project's own containers."""

from __future__ import annotations

from kitty_ops import config
from kitty_ops.containers.compose import Compose
from tests.harness import bystander, docker


def compose_for(stack, use_engine: bool) -> Compose:
    settings, _ = config.load_settings(stack.env_file, environ=stack.env())
    compose = Compose(settings.compose)
    assert compose.engine is not None  # this machine's engine is a unix socket
    if not use_engine:
        compose.engine = None
    return compose


def test_engine_and_cli_read_the_same_states_and_remove_only_the_project(stack):
    stack.stack_env({}, profiles="")
    up = stack.compose("up", "-d", "--wait", "redis", "mosquitto", timeout=180)
    assert up.returncode == 0, up.stderr
    by_engine, by_cli = compose_for(stack, True), compose_for(stack, False)

    engine_states = by_engine.project_states(10, memory=True)
    cli_states = by_cli.project_states(10)
    assert sorted(engine_states) == sorted(cli_states) == ["mosquitto", "redis"]
    for service in engine_states:
        mine, theirs = engine_states[service], cli_states[service]
        assert (mine.id, mine.status, mine.health, mine.image, mine.ports) == \
            (theirs.id, theirs.status, theirs.health, theirs.image, theirs.ports)
        assert mine.status == "running" and mine.health == "healthy"
        assert any(p.endswith("->6379/tcp") for p in engine_states["redis"].ports)
        assert mine.memory_bytes and mine.memory_bytes > 100_000  # the engine's stats were read
        assert theirs.memory_bytes is None  # the CLI path asks no stats
    assert by_engine.container_ids() == by_cli.container_ids()
    model = by_engine.model()
    model = type(model)(model.project, {**model.services, "extra": type(model.services["redis"])(
        "extra", "kitty-ops-test/no-such-image:0", {}, False, (), ())})
    for way in (by_engine, by_cli):
        assert way.missing_images(model, ["redis", "mosquitto", "extra"]) == \
            {"kitty-ops-test/no-such-image:0": ["extra"]}

    with bystander(stack) as other:
        removed = by_engine.remove(["redis"])
        assert removed.code == 0, removed.err
        assert stack.containers() == [f"{stack.compose_project}-mosquitto-1"]
        removed = by_cli.remove(["mosquitto"])
        assert removed.code == 0, removed.err
        assert stack.containers() == []
        one_off = stack.compose("run", "-d", "--no-deps", "--entrypoint", "sleep", "redis", "300")
        assert one_off.returncode == 0, one_off.stderr
        assert len(stack.containers()) == 1  # a `compose run` container, on the project's network
        down = by_engine.down()
        assert stack.containers() == []  # removed by the down, as compose's own down does
        assert down.code == 0, down.err
        networks = docker("network", "ls", "--filter", f"label=com.docker.compose.project={stack.compose_project}",
                          "--format", "{{.Name}}")
        assert networks.stdout.split() == []  # the project's network is gone, as with `compose down`
        still = docker("inspect", "--format", "{{.State.Running}}", other)
        assert still.stdout.strip() == "true"  # another project's container was not touched


def test_an_engine_that_does_not_answer_is_an_error_naming_it(stack, tmp_path):
    stack.stack_env({}, profiles="")
    settings, _ = config.load_settings(stack.env_file, environ=stack.env())
    env = {**stack.env(), "DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"}
    import kitty_ops.containers.engine as engines
    compose = Compose(settings.compose)
    compose.engine = engines.connect(env)
    version = compose.engine_version(2)
    assert version.code == 1 and "no-such.sock" in version.err
    try:
        compose.project_states(2)
    except Exception as exc:  # ComposeError, with the engine's address and the next step
        assert "no-such.sock" in exc.problem.message and exc.problem.runbook is not None
    else:
        raise AssertionError("project_states answered without an engine")
