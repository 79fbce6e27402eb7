"""Is a TCP port free, and if not, who holds it.

The kernels disagree on "could I bind it". Linux refuses a bind that overlaps any listener. xnu
(macOS) refuses, under SO_REUSEADDR, only the exact same address or another user's socket:
127.0.0.1:P binds beside this user's listener on *:P, and 0.0.0.0:P beside one on 127.0.0.1:P
(Docker Desktop's port forwarder runs as this user). So a port is free only when it can be bound
*and* nothing accepts a connection on it.

Who holds it: psutil lists every socket on Linux, but needs root for that on macOS; there the
user's own processes are asked, then lsof (through the platform seam).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket

import psutil

from kitty_ops.host.platform import Host

CONNECT_TIMEOUT = 0.5
WILDCARDS = ("", "0.0.0.0", "::")
LOOPBACKS = ("127.0.0.1", "::1")  # where this machine reaches a listener on a wildcard address


@dataclasses.dataclass(frozen=True)
class Holder:
    pid: int | None
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command})" if self.pid else self.command


def is_free(host: str, port: int) -> bool:
    """True when a listener could bind host:port now and nothing answers there (for a wildcard
    address: on 127.0.0.1 or ::1)."""
    targets = LOOPBACKS if host in WILDCARDS else (host,)
    return can_bind(host, port) and not any(accepts(target, port) for target in targets)


def can_bind(host: str, port: int) -> bool:
    """The kernel's answer to a bind of host:port. SO_REUSEADDR so that sockets lingering in
    TIME_WAIT after a clean stop do not count as busy (llama-server sets it too); never
    SO_REUSEPORT, so a listener that set it still shows as busy. On macOS a yes is not enough
    (see the module docstring)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def accepts(host: str, port: int) -> bool:
    """Something accepts a TCP connection on host:port (a specific address, not a wildcard)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONNECT_TIMEOUT)
            return sock.connect_ex((host, port)) == 0
    except OSError:  # no IPv6 on this machine, say
        return False


def holders(port: int, host: Host | None = None) -> list[Holder]:
    """Processes listening on `port` (any address). Where psutil may not list every socket (macOS
    without root), this user's own processes and lsof answer; a busy port that neither names
    reads as held by a process this user cannot inspect."""
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        found = _own_holders(port) or [Holder(pid, _command(pid, name))
                                       for pid, name in (host or Host.current()).listeners(port)]
        return found or [Holder(None, "a process this user cannot inspect")]
    pids = dict.fromkeys(conn.pid for conn in conns if _listens_on(conn, port))
    return [Holder(pid, _command(pid)) for pid in pids]


def _own_holders(port: int) -> list[Holder]:
    found = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if uids is None or uids.real != os.getuid():
            continue
        try:
            # net_connections since psutil 6; connections before
            conns = (getattr(proc, "net_connections", None) or proc.connections)(kind="inet")
        except psutil.Error:
            continue
        if any(_listens_on(conn, port) for conn in conns):
            found.append(Holder(proc.pid, _command(proc.pid)))
    return found


def _listens_on(conn, port: int) -> bool:
    return conn.status == psutil.CONN_LISTEN and bool(conn.laddr) and conn.laddr.port == port


def _command(pid: int | None, fallback: str = "exited process") -> str:
    if pid is None:
        return "unknown process"
    try:
        process = psutil.Process(pid)
        return " ".join(process.cmdline())[:160] or process.name()
    except psutil.Error:
        return fallback
