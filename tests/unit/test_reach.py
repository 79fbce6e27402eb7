"""kitty_ops.stack.reach.plan: on Linux a llama server that containers call listens where they
reach it (the Docker bridge gateway) unless the operator chose its address; on macOS nothing
changes. Pure: settings, the graph, the system and the gateway in; settings and problems out."""

from __future__ import annotations

from pathlib import Path

from kitty_ops.config import load_settings
from kitty_ops.runbooks import Runbook
from kitty_ops.stack import reach
from kitty_ops.stack.graph import Graph, Node, Tier

GATEWAY = "172.17.0.1"


def settings(tmp_path: Path, **env: str):
    lines = {"LLAMACPP_SERVERS": "q4,f16,summary", "LLAMACPP_SUMMARY_ENABLED": "true", **env}
    path = tmp_path / ".env"
    path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    loaded, _ = load_settings(path, environ={"KITTY_PROJECT_DIR": str(tmp_path)})
    return loaded


def graph(brain_needs: tuple[str, ...] = ("q4", "f16")) -> Graph:
    nodes = {f"llama:{n}": Node(f"llama:{n}", Tier.LLAMA, n, frozenset()) for n in ("q4", "f16", "summary")}
    nodes["compose:postgres"] = Node("compose:postgres", Tier.COMPOSE, "postgres", frozenset())
    nodes["compose:brain"] = Node("compose:brain", Tier.COMPOSE, "brain",
                                  frozenset({"compose:postgres", *(f"llama:{n}" for n in brain_needs)}))
    return Graph(nodes)


def binds(planned) -> dict[str, str]:
    return {s.name: s.bind for s in planned.servers}


def test_on_linux_the_servers_brain_calls_listen_on_the_bridge_gateway_and_only_those(tmp_path):
    planned, problems = reach.plan(settings(tmp_path), graph(), "Linux", GATEWAY)
    assert problems == []
    assert binds(planned) == {"q4": GATEWAY, "f16": GATEWAY, "summary": "127.0.0.1"}
    assert planned.server("q4").url == f"http://{GATEWAY}:8083"


def test_on_macos_docker_desktop_reaches_loopback_so_nothing_changes(tmp_path):
    loaded = settings(tmp_path)
    planned, problems = reach.plan(loaded, graph(), "Darwin", None)
    assert problems == [] and planned == loaded


def test_without_a_container_that_calls_a_llama_server_nothing_changes_and_docker_is_not_asked(tmp_path):
    loaded = settings(tmp_path)
    assert not reach.on_loopback_for_containers(loaded, graph(brain_needs=()))
    planned, problems = reach.plan(loaded, graph(brain_needs=()), "Linux", None)
    assert problems == [] and planned == loaded


def test_a_bind_the_operator_chose_is_kept_when_containers_reach_it(tmp_path):
    planned, problems = reach.plan(settings(tmp_path, LLAMACPP_Q4_BIND="0.0.0.0"), graph(), "Linux", GATEWAY)
    assert problems == []
    assert binds(planned)["q4"] == "0.0.0.0" and binds(planned)["f16"] == GATEWAY


def test_an_explicit_loopback_bind_for_a_server_brain_calls_is_an_error_naming_the_fix(tmp_path):
    _, problems = reach.plan(settings(tmp_path, LLAMACPP_Q4_BIND="127.0.0.1"), graph(), "Linux", GATEWAY)
    assert [p.subject for p in problems] == ["LLAMACPP_Q4_BIND"]
    assert problems[0].is_error and "brain" in problems[0].message and GATEWAY in problems[0].fix
    assert problems[0].runbook is Runbook.E2E


def test_an_unreadable_gateway_is_an_error_saying_why_not_a_silent_loopback(tmp_path):
    _, problems = reach.plan(settings(tmp_path), graph(), "Linux", None, "no docker0 here")
    assert sorted(p.subject for p in problems) == ["LLAMACPP_F16_BIND", "LLAMACPP_Q4_BIND"]
    assert all("no docker0 here" in p.message for p in problems)
