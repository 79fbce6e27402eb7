#!/usr/bin/env python3
"""A stand-in for a native service of the stack (the images API or its RQ worker): optionally
serves GET /health on --port, and appends `started <time>` / `stopping <time>` lines to
--events, so a test can check the order in which kitty-ops started and stopped the services."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def note(path: str | None, what: str, name: str) -> None:
    if path:
        with open(path, "a") as handle:
            handle.write(f"{what} {name} {time.time():.6f}\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--events", default=None)
    parser.add_argument("--exit-after", type=float, default=None, help="crash with code 3 after N s")
    args = parser.parse_args()

    def on_term(signum, frame):  # noqa: ARG001
        note(args.events, "stopping", args.name)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    note(args.events, "started", args.name)
    print(f"{args.name}: up", flush=True)
    if args.port:
        class Health(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200 if self.path == "/health" else 404)
                self.end_headers()

            def log_message(self, *a):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", args.port), Health)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    if args.exit_after is not None:
        time.sleep(args.exit_after)
        print(f"{args.name}: giving up", flush=True)
        sys.exit(3)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
