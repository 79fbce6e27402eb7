"""The supervisor's own Prometheus endpoint: `http://127.0.0.1:KITTY_METRICS_PORT/metrics`
(text exposition format 0.0.4), so that the observability stack scrapes kitty-ops itself. Only
loopback: it says which components run and how they fail, nothing an outside host should read.

`render` is pure (a state snapshot in, the text out); `serve` runs a small threaded HTTP server
that renders on each scrape.
"""

from __future__ import annotations

import http.server
import threading
from typing import Callable

from kitty_ops.host.supervision import BACKOFF, FAILED, RUNNING, STARTING, STOPPED, STOPPING, SupervisorState

STATES = (RUNNING, STARTING, BACKOFF, FAILED, STOPPING, STOPPED)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(state: SupervisorState, now: float) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{rendered}}} {float(value)!r}" if rendered else f"{name} {float(value)!r}")

    views = sorted(state.components.values(), key=lambda v: v.id)

    def who(v) -> dict[str, str]:
        return {"component": v.name, "tier": v.tier}

    family("kitty_supervisor_uptime_seconds", "gauge", "Seconds since this supervisor started.",
           [({}, max(0.0, now - state.started_at))])
    family("kitty_supervised_up", "gauge", "1 when the component runs and is healthy, else 0.",
           [(who(v), 1 if v.state == RUNNING else 0) for v in views])
    family("kitty_supervised_state", "gauge", "The supervisor's state of the component (one series per state, 1 for the current).",
           [({**who(v), "state": s}, 1 if v.state == s else 0) for v in views for s in STATES])
    family("kitty_supervised_restarts_total", "counter", "Restarts of the component by the supervisor.",
           [(who(v), v.restarts) for v in views])
    family("kitty_supervised_last_exit_code", "gauge", "Exit status of the component's last exit (when it was known).",
           [(who(v), v.last_exit.code) for v in views if v.last_exit and v.last_exit.code is not None])
    family("kitty_supervised_last_exit_signal", "gauge", "Signal that ended the component's last run (when known).",
           [(who(v), v.last_exit.signal) for v in views if v.last_exit and v.last_exit.signal is not None])
    family("kitty_supervised_seconds_since_restart", "gauge", "Seconds since the supervisor last restarted it.",
           [(who(v), max(0.0, now - v.last_restart)) for v in views if v.last_restart])
    return "\n".join(lines) + "\n"


def serve(port: int, snapshot: Callable[[], str]) -> http.server.ThreadingHTTPServer:
    """Listen on 127.0.0.1:`port` (raises OSError when it is taken) and answer GET /metrics."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # scrapes every 15 s would flood the supervisor's log
            pass

        def do_GET(self):  # noqa: N802
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            body = snapshot().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
