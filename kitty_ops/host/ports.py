"""Is a TCP port free, and if not, who holds it."""

from __future__ import annotations

import dataclasses
import errno
import socket

import psutil


@dataclasses.dataclass(frozen=True)
class Holder:
    pid: int | None
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command})" if self.pid else self.command


def is_free(host: str, port: int) -> bool:
    """True when a listener could bind host:port now. SO_REUSEADDR so that sockets lingering in
    TIME_WAIT after a clean stop do not count as busy (llama-server sets it too); never
    SO_REUSEPORT, so a listener that set it still shows as busy."""
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


def holders(port: int) -> list[Holder]:
    """Processes listening on `port` (any address). Best effort: without the rights to see other
    users' sockets the list may be empty although the port is busy."""
    found: dict[int | None, Holder] = {}
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return [Holder(None, "a process this user cannot inspect")]
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            found.setdefault(conn.pid, Holder(conn.pid, _command(conn.pid)))
    return list(found.values())


def _command(pid: int | None) -> str:
    if pid is None:
        return "unknown process"
    try:
        return " ".join(psutil.Process(pid).cmdline())[:160] or psutil.Process(pid).name()
    except psutil.Error:
        return "exited process"
