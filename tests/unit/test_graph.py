"""graph: one dependency graph over llama servers, native services and compose services (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kitty_ops.config import NativeService
from kitty_ops.containers.compose import ServiceModel, StackModel
from kitty_ops.stack import graph as graphs
from kitty_ops.stack.graph import CycleError, Graph, Node, Tier

# ---------------------------------------------------------------------------------- helpers

def svc(name: str, depends_on: tuple[str, ...] = (), needs: tuple[str, ...] = (),
        healthy: bool = True) -> ServiceModel:
    return ServiceModel(
        name=name, image=f"example/{name}:latest",
        depends_on={d: "service_healthy" for d in depends_on},
        has_healthcheck=healthy, needs=tuple(needs), ports=())


def stack(*services: ServiceModel, project: str = "kitty") -> StackModel:
    return StackModel(project, {s.name: s for s in services})


def native(name: str, needs: tuple[str, ...] = ()) -> NativeService:
    return NativeService(name=name, argv=("true",), cwd=Path("."), health_url=None, settle=0.0,
                         needs=tuple(needs))


def deps(graph: Graph, node_id: str) -> set[str]:
    return set(graph.nodes[node_id].deps)


def edges(graph: Graph) -> set[tuple[str, str]]:
    """(dependent, dependency) pairs."""
    return {(n, d) for n, node in graph.nodes.items() for d in node.deps}


LLAMAS = ("q4", "f16", "summary")  # vision disabled
ALL_LLAMA = {"llama:q4", "llama:f16", "llama:summary"}


def seed_model() -> StackModel:
    return stack(
        svc("redis"),
        svc("postgres"),
        svc("mosquitto"),
        svc("rustfs"),
        svc("brain", depends_on=("postgres", "redis", "mosquitto"), needs=("llama:*",)),
        svc("gateway", depends_on=("brain",)),
    )


def seed_natives() -> list[NativeService]:
    return [native("images-worker", needs=("compose:redis",)),
            native("images-api", needs=("native:images-worker",))]


@pytest.fixture
def seed() -> Graph:
    graph, notes = graphs.build(LLAMAS, seed_natives(), seed_model())
    assert notes == []
    return graph


def assert_topological(graph: Graph, order: list[str]) -> None:
    assert sorted(order) == sorted(graph.nodes), "every node exactly once"
    position = {n: i for i, n in enumerate(order)}
    for node_id, node in graph.nodes.items():
        for dep in node.deps:
            assert position[dep] < position[node_id], f"{dep} must come before {node_id}"


# -------------------------------------------------------------------------------------- build

def test_build_node_ids_and_tiers(seed):
    assert set(seed.nodes) == ALL_LLAMA | {
        "native:images-worker", "native:images-api",
        "compose:redis", "compose:postgres", "compose:mosquitto", "compose:rustfs",
        "compose:brain", "compose:gateway"}
    assert seed.nodes["llama:q4"].tier is Tier.LLAMA
    assert seed.nodes["llama:q4"].name == "q4"
    assert seed.nodes["native:images-api"].tier is Tier.NATIVE
    assert seed.nodes["native:images-api"].name == "images-api"
    assert seed.nodes["compose:brain"].tier is Tier.COMPOSE
    assert seed.nodes["compose:brain"].name == "brain"


def test_llama_nodes_have_no_dependencies(seed):
    for node_id in ALL_LLAMA:
        assert seed.nodes[node_id].deps == frozenset()


def test_compose_depends_on_become_compose_edges(seed):
    assert deps(seed, "compose:gateway") == {"compose:brain"}
    assert {"compose:postgres", "compose:redis", "compose:mosquitto"} <= deps(seed, "compose:brain")


def test_needs_llama_star_means_every_llama_node(seed):
    assert deps(seed, "compose:brain") == {"compose:postgres", "compose:redis", "compose:mosquitto"} | ALL_LLAMA


def test_needs_bare_llama_tier_means_every_llama_node():
    graph, notes = graphs.build(LLAMAS, [], stack(svc("brain", needs=("llama",))))
    assert deps(graph, "compose:brain") == ALL_LLAMA
    assert notes == []


def test_needs_one_llama_server_means_just_that_one():
    graph, notes = graphs.build(LLAMAS, [], stack(svc("summarizer", needs=("llama:q4",))))
    assert deps(graph, "compose:summarizer") == {"llama:q4"}
    assert notes == []


def test_needs_bare_name_resolves_to_native_service():
    graph, notes = graphs.build(LLAMAS, seed_natives(),
                                stack(svc("redis"), svc("brain", needs=("images-api",))))
    assert deps(graph, "compose:brain") == {"native:images-api"}
    assert notes == []


def test_needs_label_list_with_several_targets():
    graph, notes = graphs.build(LLAMAS, seed_natives(),
                                stack(svc("redis"), svc("cad", needs=("llama:f16", "images-api"))))
    assert deps(graph, "compose:cad") == {"llama:f16", "native:images-api"}
    assert notes == []


def test_need_outside_the_graph_is_dropped_with_a_note_naming_it():
    # vision is disabled: it is not among the llama names.
    graph, notes = graphs.build(LLAMAS, [], stack(svc("brain", needs=("llama:q4", "llama:vision"))))
    assert deps(graph, "compose:brain") == {"llama:q4"}
    assert "llama:vision" not in graph.nodes
    assert len(notes) == 1
    assert "compose:brain" in notes[0]
    assert "llama:vision" in notes[0]
    assert "not part of this stack" in notes[0]


def test_bare_need_on_unknown_name_is_dropped_with_a_note():
    graph, notes = graphs.build(LLAMAS, [], stack(svc("brain", needs=("images-api",))))
    assert deps(graph, "compose:brain") == set()
    assert len(notes) == 1 and "images-api" in notes[0] and "compose:brain" in notes[0]


def test_native_needs_become_edges(seed):
    assert deps(seed, "native:images-worker") == {"compose:redis"}
    assert deps(seed, "native:images-api") == {"native:images-worker"}


def test_native_need_on_compose_is_dropped_with_a_note_when_compose_is_disabled():
    graph, notes = graphs.build(LLAMAS, seed_natives(), None)
    assert not any(n.startswith("compose:") for n in graph.nodes)
    assert deps(graph, "native:images-worker") == set()
    assert deps(graph, "native:images-api") == {"native:images-worker"}
    assert len(notes) == 1
    assert "native:images-worker" in notes[0]
    assert "compose:redis" in notes[0]


def test_build_with_nothing_is_an_empty_graph():
    graph, notes = graphs.build([], [], None)
    assert dict(graph.nodes) == {}
    assert notes == []
    assert graph.levels() == []
    assert graph.order() == []


def test_infrastructure_never_waits_for_llama_servers(seed):
    for infra in ("compose:redis", "compose:postgres", "compose:mosquitto", "compose:rustfs"):
        assert graphs.closure(seed, [infra]) == {infra}, infra
        assert not any(d.startswith("llama:") for d in graphs.closure(seed, [infra]))
    # ...and so they are all in the very first level, alongside the llama servers.
    first = set(seed.levels()[0])
    assert {"compose:redis", "compose:postgres", "compose:mosquitto", "compose:rustfs"} <= first
    assert ALL_LLAMA <= first


def test_images_worker_does_not_wait_for_llama_servers(seed):
    assert graphs.closure(seed, ["native:images-api"]) == {
        "native:images-api", "native:images-worker", "compose:redis"}


# ----------------------------------------------------------------------------- levels / order

def test_levels_of_seed_graph(seed):
    assert seed.levels() == [
        ["llama:f16", "llama:q4", "llama:summary",
         "compose:mosquitto", "compose:postgres", "compose:redis", "compose:rustfs"],
        ["native:images-worker", "compose:brain"],
        ["native:images-api", "compose:gateway"],
    ]


def test_order_puts_dependencies_before_dependents(seed):
    order = seed.order()
    assert_topological(seed, order)
    assert order == [n for level in seed.levels() for n in level]


def test_levels_every_edge_crosses_to_a_later_level(seed):
    level_of = {n: i for i, level in enumerate(seed.levels()) for n in level}
    for node_id, dep in edges(seed):
        assert level_of[dep] < level_of[node_id], (dep, node_id)


def test_within_a_level_tiers_are_llama_then_native_then_compose():
    # A compose service, a native one and a llama server, none depending on anything, with
    # names that would sort the other way round alphabetically.
    graph, _ = graphs.build(["zz"], [native("mm")], stack(svc("aa")))
    assert graph.levels() == [["llama:zz", "native:mm", "compose:aa"]]
    tiers = [graph.nodes[n].tier for n in graph.order()]
    assert tiers == [Tier.LLAMA, Tier.NATIVE, Tier.COMPOSE]


def test_order_is_deterministic_whatever_the_input_order():
    a, _ = graphs.build(["q4", "f16"], seed_natives(), seed_model())
    model = seed_model()
    reversed_model = StackModel(model.project, dict(reversed(list(model.services.items()))))
    b, _ = graphs.build(["f16", "q4"], list(reversed(seed_natives())), reversed_model)
    assert a.order() == b.order()
    assert a.levels() == b.levels()


def test_of_tier_in_order(seed):
    assert [n.id for n in seed.of_tier(Tier.NATIVE)] == ["native:images-worker", "native:images-api"]
    assert [n.id for n in seed.of_tier(Tier.LLAMA)] == ["llama:f16", "llama:q4", "llama:summary"]


def test_dependents(seed):
    assert seed.dependents("compose:brain") == {"compose:gateway"}
    assert seed.dependents("compose:redis") == {"compose:brain", "native:images-worker"}
    assert seed.dependents("llama:q4") == {"compose:brain"}
    assert seed.dependents("compose:gateway") == set()


# ---------------------------------------------------------------------------------- cycles

def test_depends_on_cycle_raises_cycle_error_naming_the_nodes():
    model = stack(svc("a", depends_on=("b",)), svc("b", depends_on=("a",)), svc("c"))
    with pytest.raises(CycleError) as info:
        graphs.build([], [], model)
    assert info.value.nodes == ["compose:a", "compose:b"]
    assert "compose:a" in str(info.value) and "compose:b" in str(info.value)
    assert "compose:c" not in str(info.value)  # c is not part of the cycle and was placed


def test_cross_tier_cycle_is_detected():
    # images-api waits for a compose service that itself needs images-api.
    model = stack(svc("brain", needs=("images-api",)))
    natives = [native("images-api", needs=("compose:brain",))]
    with pytest.raises(CycleError) as info:
        graphs.build([], natives, model)
    assert set(info.value.nodes) == {"compose:brain", "native:images-api"}


def test_levels_raises_cycle_error_on_hand_built_cycle():
    graph = Graph({"compose:x": Node("compose:x", Tier.COMPOSE, "x", frozenset({"compose:x"}))})
    with pytest.raises(CycleError, match="compose:x"):
        graph.levels()


# ---------------------------------------------------------------------------- resolve_names

def test_resolve_bare_llama_name(seed):
    assert graphs.resolve_names(seed, ["q4"]) == ({"llama:q4"}, [])


def test_resolve_full_id(seed):
    assert graphs.resolve_names(seed, ["llama:q4"]) == ({"llama:q4"}, [])


def test_resolve_bare_compose_name(seed):
    assert graphs.resolve_names(seed, ["postgres"]) == ({"compose:postgres"}, [])


def test_resolve_tier_name_means_all_of_that_tier(seed):
    ids, unknown = graphs.resolve_names(seed, ["compose"])
    assert ids == {"compose:redis", "compose:postgres", "compose:mosquitto", "compose:rustfs",
                   "compose:brain", "compose:gateway"}
    assert unknown == []
    assert graphs.resolve_names(seed, ["llama"]) == (ALL_LLAMA, [])
    assert graphs.resolve_names(seed, ["native"]) == (
        {"native:images-worker", "native:images-api"}, [])


def test_resolve_unknown_names_are_returned_in_order(seed):
    ids, unknown = graphs.resolve_names(seed, ["q4", "nosuch", "vision", "llama:vision"])
    assert ids == {"llama:q4"}
    assert unknown == ["nosuch", "vision", "llama:vision"]


def test_resolve_several_names(seed):
    ids, unknown = graphs.resolve_names(seed, ["q4", "images-api", "compose:gateway"])
    assert ids == {"llama:q4", "native:images-api", "compose:gateway"}
    assert unknown == []


# --------------------------------------------------------------------------- select_for_start

def test_start_only_brain_keeps_its_transitive_dependencies(seed):
    only, _ = graphs.resolve_names(seed, ["brain"])
    plan = graphs.select_for_start(seed, only, set())
    assert set(plan.nodes) == {"compose:brain", "compose:postgres", "compose:redis",
                               "compose:mosquitto"} | ALL_LLAMA
    assert "compose:gateway" not in plan.nodes
    assert "compose:rustfs" not in plan.nodes
    assert "native:images-worker" not in plan.nodes
    assert deps(plan, "compose:brain") == deps(seed, "compose:brain")


def test_start_only_gateway_is_transitive_through_brain(seed):
    plan = graphs.select_for_start(seed, {"compose:gateway"}, set())
    assert set(plan.nodes) == {"compose:gateway", "compose:brain", "compose:postgres",
                               "compose:redis", "compose:mosquitto"} | ALL_LLAMA


def test_start_skip_q4_removes_it_and_the_edge_to_it(seed):
    skip, _ = graphs.resolve_names(seed, ["q4"])
    plan = graphs.select_for_start(seed, set(), skip)
    assert "llama:q4" not in plan.nodes
    assert set(plan.nodes) == set(seed.nodes) - {"llama:q4"}
    assert "llama:q4" not in deps(plan, "compose:brain")
    assert deps(plan, "compose:brain") == {"compose:postgres", "compose:redis", "compose:mosquitto",
                                           "llama:f16", "llama:summary"}
    # No node of the plan refers to a node outside it.
    for node in plan.nodes.values():
        assert node.deps <= set(plan.nodes)
    assert_topological(plan, plan.order())


def test_start_only_and_skip_together(seed):
    plan = graphs.select_for_start(seed, {"compose:brain"}, {"compose:postgres"})
    assert set(plan.nodes) == {"compose:brain", "compose:redis", "compose:mosquitto"} | ALL_LLAMA
    assert "compose:postgres" not in deps(plan, "compose:brain")


def test_start_select_does_not_change_the_full_graph(seed):
    before = {n: node.deps for n, node in seed.nodes.items()}
    graphs.select_for_start(seed, {"compose:brain"}, {"llama:q4"})
    assert {n: node.deps for n, node in seed.nodes.items()} == before


# ---------------------------------------------------------------------------- select_for_stop

def test_stop_only_postgres_keeps_just_postgres(seed):
    plan = graphs.select_for_stop(seed, {"compose:postgres"}, set())
    assert set(plan.nodes) == {"compose:postgres"}
    assert plan.nodes["compose:postgres"].deps == frozenset()


def test_stop_skip_keeps_everything_else(seed):
    plan = graphs.select_for_stop(seed, set(), {"compose:postgres"})
    assert set(plan.nodes) == set(seed.nodes) - {"compose:postgres"}
    assert "compose:postgres" not in deps(plan, "compose:brain")


def test_stop_everything_when_nothing_is_selected(seed):
    plan = graphs.select_for_stop(seed, set(), set())
    assert {n: node.deps for n, node in plan.nodes.items()} == \
        {n: node.deps for n, node in seed.nodes.items()}


# ----------------------------------------------------------------------------- reversed_graph

def test_reversed_graph_stops_dependents_first(seed):
    rev = graphs.reversed_graph(seed)
    assert set(rev.nodes) == set(seed.nodes)
    assert "compose:brain" in deps(rev, "compose:postgres")
    assert deps(rev, "compose:postgres") == {"compose:brain"}
    assert deps(rev, "native:images-worker") == {"native:images-api"}
    assert deps(rev, "llama:q4") == {"compose:brain"}
    assert deps(rev, "compose:redis") == {"compose:brain", "native:images-worker"}
    assert deps(rev, "compose:brain") == {"compose:gateway"}
    assert deps(rev, "compose:gateway") == set()
    assert deps(rev, "native:images-api") == set()


def test_reversed_graph_edges_are_exactly_the_flipped_edges(seed):
    rev = graphs.reversed_graph(seed)
    assert edges(rev) == {(d, n) for n, d in edges(seed)}
    order = rev.order()
    assert_topological(rev, order)
    assert order.index("compose:gateway") < order.index("compose:brain") < order.index("compose:postgres")


def test_reversed_graph_of_stop_selection(seed):
    chosen = graphs.select_for_stop(seed, {"compose:brain", "compose:postgres"}, set())
    rev = graphs.reversed_graph(chosen)
    assert set(rev.nodes) == {"compose:brain", "compose:postgres"}
    assert deps(rev, "compose:postgres") == {"compose:brain"}
    assert deps(rev, "compose:brain") == set()


# ------------------------------------------------------------------------------ critical_path

def small_graph() -> Graph:
    graph, notes = graphs.build(["a", "b"], [], stack(svc("pg"), svc("brain", depends_on=("pg",),
                                                                        needs=("llama:*",))))
    assert notes == []
    return graph


def test_critical_path_follows_the_slowest_dependency():
    durations = {"llama:a": 2, "llama:b": 6, "compose:pg": 2, "compose:brain": 1}
    total, chain = graphs.critical_path(small_graph(), durations)
    assert total == 7.0
    assert chain == ["llama:b", "compose:brain"]


def test_critical_path_when_infrastructure_is_slowest():
    durations = {"llama:a": 2, "llama:b": 6, "compose:pg": 10, "compose:brain": 1}
    assert graphs.critical_path(small_graph(), durations) == (11.0, ["compose:pg", "compose:brain"])


def test_critical_path_missing_durations_count_as_zero():
    total, chain = graphs.critical_path(small_graph(), {"llama:a": 3})
    assert total == 3.0
    assert chain[0] == "llama:a"
    assert chain[-1] in ("llama:a", "compose:brain")


def test_critical_path_of_a_longer_chain(seed):
    durations = {n: 1.0 for n in seed.nodes}
    total, chain = graphs.critical_path(seed, durations)
    assert total == 3.0  # three levels of one second each
    assert len(chain) == 3
    for dependent, dependency in zip(chain[1:], chain):
        assert dependency in seed.nodes[dependent].deps


def test_critical_path_of_empty_graph():
    assert graphs.critical_path(Graph({}), {}) == (0.0, [])
