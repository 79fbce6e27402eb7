"""Can the containers that call the llama servers reach them? Where they cannot, where to listen.

A compose service that needs llama servers (`kitty-ops.needs: llama:*`, brain) calls them at
`host.docker.internal`, mapped to `host-gateway`. Docker Desktop (macOS) sends that to the
Mac's loopback, so the default bind address, 127.0.0.1, works there. On Linux `host-gateway` is
the default bridge's gateway on the host (docker0, e.g. 172.17.0.1): a server on 127.0.0.1 is
out of reach and the end-to-end query fails. So on Linux a server that containers need, and
whose bind address the operator left at its default, listens on that gateway address: the
narrowest one containers reach, not the network (0.0.0.0). Every later probe uses the URL its
record holds. A bind the operator set to loopback for such a server is an error that names the
fix, never a silent end-to-end failure.

`plan` is pure; `bridge_gateway` asks the engine and the host for the address.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json

import psutil

from kitty_ops.config import Settings
from kitty_ops.containers.compose import QUICK, Compose
from kitty_ops.problems import Problem, error
from kitty_ops.runbooks import Runbook
from kitty_ops.stack.graph import Graph, Tier

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def needed_by_containers(graph: Graph) -> dict[str, list[str]]:
    """llama server name -> the compose services that depend on it."""
    needed: dict[str, list[str]] = {}
    for node in graph.nodes.values():
        if node.tier is Tier.COMPOSE:
            for dep in sorted(node.deps):
                if graph.nodes[dep].tier is Tier.LLAMA:
                    needed.setdefault(graph.nodes[dep].name, []).append(node.name)
    return needed


def plan(settings: Settings, graph: Graph, system: str,
         gateway: str | None, gateway_error: str = "") -> tuple[Settings, list[Problem]]:
    """The settings with the bind address each server needs so that its container callers reach
    it, and the problems when that cannot be: pure."""
    needed = needed_by_containers(graph)
    if system == "Darwin" or not needed:
        return settings, []
    servers, problems = [], []
    for spec in settings.servers:
        callers = needed.get(spec.name)
        if not callers or spec.bind not in LOOPBACK:
            servers.append(spec)
            continue
        who = ", ".join(callers)
        if spec.bind_explicit:
            problems.append(error(
                f"{spec.var_prefix}BIND",
                f"{who} calls server {spec.name!r} at host.docker.internal, which on Linux is the Docker "
                f"bridge's gateway, but {spec.var_prefix}BIND={spec.bind} listens on loopback only",
                f"remove {spec.var_prefix}BIND (kitty-ops then listens on the bridge gateway"
                + (f", {gateway}" if gateway else "") + "), or set it to that address",
                Runbook.E2E))
        elif gateway is None:
            problems.append(error(
                f"{spec.var_prefix}BIND",
                f"{who} calls server {spec.name!r} at host.docker.internal, but the Docker bridge's "
                f"gateway address could not be read ({gateway_error})",
                f"set {spec.var_prefix}BIND to the address host.docker.internal has in containers "
                "(`ip -4 addr show docker0`)", Runbook.E2E))
        else:
            spec = dataclasses.replace(spec, bind=gateway)
        servers.append(spec)
    return dataclasses.replace(settings, servers=tuple(servers)), problems


def bridge_gateway(compose: Compose) -> tuple[str | None, str]:
    """The host's address on Docker's default bridge (what `host-gateway` maps to), or None and
    why: the IPAM gateway when the engine names one, else the bridge interface's IPv4 address
    on this host (dockerd often records only the subnet)."""
    found = compose.run(["docker", "network", "inspect", "bridge"], QUICK)
    if found.code != 0:
        return None, f"docker network inspect bridge: {found.err.strip()[:200] or 'failed'}"
    try:
        network = json.loads(found.out)[0]
        for config in network.get("IPAM", {}).get("Config") or []:
            if config.get("Gateway"):
                return str(ipaddress.ip_address(config["Gateway"])), ""
        interface = (network.get("Options") or {}).get("com.docker.network.bridge.name", "docker0")
    except (ValueError, LookupError, TypeError) as exc:
        return None, f"unreadable answer from docker network inspect bridge ({exc})"
    for address in psutil.net_if_addrs().get(interface, []):
        if address.family.name == "AF_INET":
            return address.address, ""
    return None, f"the bridge interface {interface} has no IPv4 address on this host (a remote or rootless engine?)"


def with_reachable_binds(settings: Settings, graph: Graph, compose: Compose | None,
                         system: str) -> tuple[Settings, list[Problem]]:
    """`plan`, asking the engine for the gateway only when a server containers call is on
    loopback (to bind it there, or to name the address in the error)."""
    if compose is None or system == "Darwin" or not on_loopback_for_containers(settings, graph):
        return settings, []
    gateway, why = bridge_gateway(compose)
    return plan(settings, graph, system, gateway, why)


def on_loopback_for_containers(settings: Settings, graph: Graph) -> bool:
    needed = needed_by_containers(graph)
    return any(spec.name in needed and spec.bind in LOOPBACK for spec in settings.servers)
