"""The plan: one dependency graph over every component of the stack. Pure: no I/O.

Nodes are named by tier: `llama:q4`, `native:images-api`, `compose:postgres`. Edges come from
compose's own `depends_on`, from the `kitty-ops.needs` label of a compose service (a service that
calls the llama servers waits for them), and from the native services' own needs (the images
worker waits for redis). Infrastructure has no edge to the llama servers, so it never waits for a
model to load: every node starts as soon as its own dependencies are ready.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Iterable, Mapping, Sequence

from kitty_ops.config import NativeService
from kitty_ops.containers.compose import StackModel


class Tier(str, enum.Enum):
    LLAMA = "llama"
    NATIVE = "native"
    COMPOSE = "compose"


@dataclasses.dataclass(frozen=True)
class Node:
    id: str
    tier: Tier
    name: str
    deps: frozenset[str]


@dataclasses.dataclass(frozen=True)
class Graph:
    nodes: Mapping[str, Node]

    def order(self) -> list[str]:
        """Dependencies first; ties in tier order (llama, native, compose), then by name."""
        return [node_id for level in self.levels() for node_id in level]

    def levels(self) -> list[list[str]]:
        """Nodes grouped by how many dependency hops separate them from a root."""
        remaining = dict(self.nodes)
        placed: set[str] = set()
        levels = []
        while remaining:
            level = sorted((n for n, node in remaining.items() if node.deps <= placed), key=self._key)
            if not level:
                raise CycleError(sorted(remaining))
            levels.append(level)
            placed |= set(level)
            for n in level:
                del remaining[n]
        return levels

    def dependents(self, node_id: str) -> set[str]:
        return {n for n, node in self.nodes.items() if node_id in node.deps}

    def of_tier(self, tier: Tier) -> list[Node]:
        return [self.nodes[n] for n in self.order() if self.nodes[n].tier is tier]

    def _key(self, node_id: str) -> tuple[int, str]:
        return list(Tier).index(self.nodes[node_id].tier), node_id


class CycleError(Exception):
    def __init__(self, nodes: list[str]):
        super().__init__(f"dependency cycle among: {', '.join(nodes)}")
        self.nodes = nodes


def build(llama_names: Sequence[str], natives: Sequence[NativeService],
          model: StackModel | None) -> tuple[Graph, list[str]]:
    """The whole graph, and notes on edges dropped because their target is not part of it."""
    nodes: dict[str, Node] = {}
    notes: list[str] = []
    llama_ids = [f"llama:{n}" for n in llama_names]
    for node_id, name in zip(llama_ids, llama_names):
        nodes[node_id] = Node(node_id, Tier.LLAMA, name, frozenset())
    native_ids = {f"native:{s.name}" for s in natives}
    compose_ids = {f"compose:{s}" for s in (model.services if model else {})}
    known = set(llama_ids) | native_ids | compose_ids

    def resolve(owner: str, needs: Iterable[str]) -> frozenset[str]:
        deps = set()
        for need in needs:
            if need in ("llama:*", "llama"):
                deps |= set(llama_ids)
                continue
            target = need if ":" in need else next(
                (f"{t.value}:{need}" for t in Tier if f"{t.value}:{need}" in known), need)
            if target in known:
                deps.add(target)
            else:
                notes.append(f"{owner}: needs {need}, which is not part of this stack; not waited for")
        return frozenset(deps)

    for service in natives:
        node_id = f"native:{service.name}"
        nodes[node_id] = Node(node_id, Tier.NATIVE, service.name, resolve(node_id, service.needs))
    for name, service in (model.services if model else {}).items():
        node_id = f"compose:{name}"
        deps = resolve(node_id, [f"compose:{d}" for d in service.depends_on] + list(service.needs))
        nodes[node_id] = Node(node_id, Tier.COMPOSE, name, deps)
    graph = Graph(nodes)
    graph.levels()  # raises CycleError
    return graph, notes


def resolve_names(graph: Graph, names: Iterable[str]) -> tuple[set[str], list[str]]:
    """Operator names -> node ids. Accepts `q4`, `llama:q4`, `postgres`, a tier (`llama`,
    `compose`, `native`). Returns the ids and the names that match nothing."""
    ids: set[str] = set()
    unknown = []
    tiers = {t.value: t for t in Tier}
    for name in names:
        if name in graph.nodes:
            ids.add(name)
        elif name in tiers:
            ids |= {n.id for n in graph.of_tier(tiers[name])}
        else:
            matches = {n.id for n in graph.nodes.values() if n.name == name}
            if matches:
                ids |= matches
            else:
                unknown.append(name)
    return ids, unknown


def closure(graph: Graph, ids: Iterable[str]) -> set[str]:
    """`ids` and everything they depend on, transitively."""
    result: set[str] = set()
    stack = list(ids)
    while stack:
        node_id = stack.pop()
        if node_id not in result:
            result.add(node_id)
            stack.extend(graph.nodes[node_id].deps)
    return result


def subgraph(graph: Graph, keep: set[str]) -> Graph:
    """Only `keep`; edges to nodes left out are dropped (those are assumed to be provided)."""
    return Graph({n: dataclasses.replace(node, deps=node.deps & keep)
                  for n, node in graph.nodes.items() if n in keep})


def select_for_start(graph: Graph, only: set[str], skip: set[str]) -> Graph:
    """--only X starts X and what X needs; --skip Y leaves Y out (and does not wait for it)."""
    keep = closure(graph, only) if only else set(graph.nodes)
    return subgraph(graph, keep - skip)


def select_for_stop(graph: Graph, only: set[str], skip: set[str]) -> Graph:
    """--only X stops just X (not what it depends on); --skip Y keeps Y running."""
    keep = set(only) if only else set(graph.nodes)
    return subgraph(graph, keep - skip)


def reversed_graph(graph: Graph) -> Graph:
    """For stopping: a node waits until everything that depends on it has stopped."""
    return Graph({n: dataclasses.replace(node, deps=frozenset(graph.dependents(n)))
                  for n, node in graph.nodes.items()})


def critical_path(graph: Graph, durations: Mapping[str, float]) -> tuple[float, list[str]]:
    """The longest chain of ready times: the fastest any start of this graph can finish."""
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for node_id in graph.order():
        deps = graph.nodes[node_id].deps
        before = max(sorted(deps), key=lambda d: finish[d]) if deps else None  # ties: by name
        finish[node_id] = (finish[before] if before else 0.0) + durations.get(node_id, 0.0)
        via[node_id] = before
    if not finish:
        return 0.0, []
    end = max(finish, key=finish.get)
    chain = [end]
    while via[chain[-1]]:
        chain.append(via[chain[-1]])
    return finish[end], chain[::-1]
