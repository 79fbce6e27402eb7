"""ports: a port is free when it can be bound and nothing answers on it, under both kernels'
bind rules (Linux refuses any overlapping bind; xnu lets this user bind beside their own listener
on another address), and its holders are named even where psutil may not list every socket
(macOS without root).

The xnu rule is simulated with real sockets whose bind succeeds where Linux's would fail; the
listeners are real."""

from __future__ import annotations

import os
import socket
import time

import psutil
import pytest

from kitty_ops.config import load_settings
from kitty_ops.containers.compose import Port, ServiceModel, StackModel
from kitty_ops.host import ports
from kitty_ops.host.platform import Host
from kitty_ops.host.records import EngineRecord
from kitty_ops.llama import lifecycle, validate
from kitty_ops.rescue import emergency
from kitty_ops.runbooks import Runbook
from kitty_ops.stack import checks, graph
from tests.harness import free_port

# `lsof -nP -iTCP:8083 -sTCP:LISTEN` on a Mac Studio, llama-server listening on 127.0.0.1:8083.
LSOF_8083 = """\
COMMAND     PID  USER   FD   TYPE             DEVICE SIZE/OFF NODE NAME
llama-ser 81234 kitty    5u  IPv4 0x4f2b9c1de0a37e55      0t0  TCP 127.0.0.1:8083 (LISTEN)
"""


class XnuSocket(socket.socket):
    """A real socket whose bind succeeds beside this user's listener on another address, as
    xnu's does under SO_REUSEADDR: it binds an unused port of the same address instead."""

    def bind(self, address):
        super().bind((address[0], 0, *address[2:]))


@pytest.fixture
def xnu(monkeypatch):
    monkeypatch.setattr(socket, "socket", XnuSocket)


def listen(host: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as llama-server does
    sock.bind((host, 0))
    sock.listen()
    return sock


@pytest.fixture
def loopback_listener():
    """The port of a real listener on 127.0.0.1."""
    with listen("127.0.0.1") as sock:
        yield sock.getsockname()[1]


def test_on_linux_a_listener_on_loopback_makes_its_port_busy_for_loopback_and_every_address(loopback_listener):
    assert ports.is_free("127.0.0.1", loopback_listener) is False
    assert ports.is_free("0.0.0.0", loopback_listener) is False
    nobodys = free_port()
    assert ports.is_free("127.0.0.1", nobodys) is True
    assert ports.is_free("0.0.0.0", nobodys) is True


def test_on_xnu_a_bind_beside_a_loopback_listener_succeeds_but_the_port_still_reads_busy(loopback_listener, xnu):
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", loopback_listener))  # the simulated kernel says yes, as xnu does
    assert ports.is_free("0.0.0.0", loopback_listener) is False
    assert ports.is_free("127.0.0.1", loopback_listener) is False
    nobodys = free_port()
    assert ports.is_free("0.0.0.0", nobodys) is True
    assert ports.is_free("127.0.0.1", nobodys) is True


def test_on_xnu_a_listener_on_every_address_makes_loopback_busy(xnu):
    with listen("0.0.0.0") as sock:  # Docker Desktop's forwarder for a port published on 0.0.0.0
        port = sock.getsockname()[1]
        assert ports.is_free("127.0.0.1", port) is False


def test_on_xnu_validate_refuses_a_port_held_on_loopback_for_a_server_on_every_address(
        tmp_path, loopback_listener, xnu):
    env = tmp_path / ".env"
    env.write_text(f"LLAMACPP_SERVERS=q4\nLLAMACPP_Q4_PORT={loopback_listener}\nLLAMACPP_Q4_BIND=0.0.0.0\n"
                   f"LLAMACPP_SERVER_BIN={tmp_path / 'no-llama-server'}\n")
    settings, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(tmp_path)})
    report = validate.check(settings, problems)
    conflicts = [p for p in report.problems if p.runbook is Runbook.PORT_CONFLICT]
    assert [p.subject for p in conflicts] == ["LLAMACPP_Q4_PORT"]
    assert f"port {loopback_listener} for server 'q4' is in use by pid {os.getpid()}" in conflicts[0].message


def test_on_xnu_stop_does_not_call_a_port_free_while_a_listener_on_every_address_holds_it(xnu, monkeypatch):
    monkeypatch.setattr(lifecycle, "PORT_RELEASE_WAIT", 0.0)
    with listen("0.0.0.0") as sock:
        port = sock.getsockname()[1]
        record = EngineRecord("q4", 4242, 0.0, [], ["llama-server"], port, f"http://127.0.0.1:{port}", "/m/q4.gguf",
                              None, "6130", "/usr/bin/llama-server", "/p/.logs/llamacpp-q4.log", 0, 0.0)
        assert lifecycle._port_still_busy(record) == f"pid {os.getpid()} ({' '.join(psutil.Process().cmdline())[:160]})"


def test_on_xnu_emergency_stop_reports_a_port_still_held_on_every_address_as_busy(xnu):
    with listen("0.0.0.0") as sock:  # a docker-proxy that outlived the emergency stop
        port = sock.getsockname()[1]
        [action] = emergency._ports({("127.0.0.1", port)}, time.monotonic())
    assert (action.target, action.result) == (f"127.0.0.1:{port}", "BUSY")


def published(**ports_of: int) -> tuple[graph.Graph, StackModel]:
    """A stack whose services each publish one port on every address (KITTY_BIND_ADDRESS=0.0.0.0)."""
    model = StackModel("kitty", {name: ServiceModel(name, f"{name}:latest", {}, True, (), (Port("0.0.0.0", port, 1),))
                                 for name, port in ports_of.items()})
    plan, _ = graph.build([], [], model)
    return plan, model


def test_on_xnu_only_the_published_port_nobody_listens_on_reads_not_listening(xnu):
    closed = free_port()
    with listen("0.0.0.0") as sock:  # Docker Desktop's forwarder
        check = checks._ports(*published(postgres=sock.getsockname()[1], redis=closed))
    assert (check.ok, check.detail, check.runbook) == (False, f"not listening: redis:{closed}", Runbook.PORT_CONFLICT)


def deny_listing_all_sockets(monkeypatch):
    """psutil.net_connections as on macOS without root."""
    def denied(kind="inet"):
        raise psutil.AccessDenied()
    monkeypatch.setattr(psutil, "net_connections", denied)


def test_holders_name_this_users_own_listener_also_where_listing_all_sockets_is_denied(loopback_listener, monkeypatch):
    me = [ports.Holder(os.getpid(), " ".join(psutil.Process().cmdline())[:160])]
    assert ports.holders(loopback_listener) == me
    deny_listing_all_sockets(monkeypatch)
    assert ports.holders(loopback_listener) == me


def test_where_no_own_process_shows_the_listener_holders_come_from_lsof(monkeypatch):
    deny_listing_all_sockets(monkeypatch)
    monkeypatch.setattr(psutil, "process_iter", lambda *args, **kwargs: iter(()))

    def elsewhere(pid):  # pid 81234 lives on the Mac that recorded the listing, not here
        raise psutil.NoSuchProcess(pid)
    monkeypatch.setattr(psutil, "Process", elsewhere)
    asked = []

    def run(argv, timeout):
        asked.append(list(argv))
        return LSOF_8083 if list(argv) == ["lsof", "-nP", "-iTCP:8083", "-sTCP:LISTEN"] else None

    assert ports.holders(8083, Host("Darwin", run)) == [ports.Holder(81234, "llama-ser")]
    assert asked == [["lsof", "-nP", "-iTCP:8083", "-sTCP:LISTEN"]]


def test_a_holder_nobody_can_name_is_said_to_be_uninspectable(monkeypatch):
    deny_listing_all_sockets(monkeypatch)
    monkeypatch.setattr(psutil, "process_iter", lambda *args, **kwargs: iter(()))
    lsof_found_nothing = Host("Darwin", lambda argv, timeout: None)
    assert ports.holders(8083, lsof_found_nothing) == [ports.Holder(None, "a process this user cannot inspect")]
