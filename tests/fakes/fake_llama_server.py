#!/usr/bin/env python3
"""A stand-in llama-server for faults the real one cannot be made to show on demand.

It accepts the command line kitty-ops builds for llama-server, answers /health like the real one
(503 {"error":{"message":"Loading model"...}} while "loading", then 200 {"status":"ok"}), and takes
its fault from extra flags that its --help lists, so they pass kitty-ops's flag check and can be
set per server through LLAMACPP_<NAME>_EXTRA_ARGS:

  --fake-load-seconds S     answer 503 for S seconds after start (default 0.2)
  --fake-bind-delay S       do not listen at all for the first S seconds
  --fake-crash-after S      exit 1 after S seconds of loading, printing a load error
  --fake-ignore-sigterm     ignore SIGTERM (only SIGKILL stops it)
  --fake-exit-delay G       after SIGTERM, take G seconds to exit
  --fake-ready-file PATH    when ready, write the wall-clock time (time.time()) to PATH
  --fake-child              also start a child process in the same process group
  --fake-busy-slots N       serve /slots with N slots processing forever (a drain never ends);
                            without it /slots and /metrics answer 404, as an old build's do
  --fake-die-after S        serve normally, then exit 3 S seconds after start (a crash loop)
  --fake-load-forever       answer 503 "Loading model" for ever (never ready, never hung)
  --fake-loading-after S    ready, then answer 503 "Loading model" from S seconds after start on
  --fake-log PATH           print PATH's lines at start, as the real engine logs its model load
                            (tests/fixtures/llama_logs: the devices and layers of a GPU it lacks)
  --fake-metrics            serve /metrics as llama-server started with --metrics does (200, its
                            gauges); without it /metrics answers 404, as an old build's does
  --fake-chatty N           print N numbered log lines per second ("chatty N"), for log rotation
  --fake-token-ms MS        a streamed /completion writes one token every MS milliseconds (default 2)

A streamed `/completion` ("stream": true) answers as llama-server does: server-sent events, one
`data: {...}` per token, then a final one with `stop: true` and the `timings` of the answer
(measured on the fake's own clock); exactly `n_predict` tokens. `/props` says `total_slots` (its
--parallel) and the context per slot.

Tests and benchmarks only; never shipped as part of kitty-ops.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "version: 9999 (fake, commit 0000000)\nbuilt with a test fixture"

# The real server's flags that kitty-ops may generate, in llama.cpp's help layout.
HELP = """----- common params -----

-h,    --help, --usage                  print usage and exit
--version                               show version and build info
-t,    --threads N                      number of CPU threads to use during generation
-c,    --ctx-size N                     size of the prompt context
-b,    --batch-size N                   logical maximum batch size
-ub,   --ubatch-size N                  physical maximum batch size
-fa,   --flash-attn [on|off|auto]       set Flash Attention use ('on', 'off', or 'auto', default: 'auto')
-ngl,  --gpu-layers, --n-gpu-layers N   max. number of layers to store in VRAM
-m,    --model FNAME                    model path to load
-np,   --parallel N                     number of server slots
-mm,   --mmproj FILE                    path to a multimodal projector file
-a,    --alias STRING                   set model name aliases, comma-separated
--host HOST                             ip address to listen
--port PORT                             port to listen (default: 8080)
--metrics                               enable prometheus compatible metrics endpoint
--jinja, --no-jinja                     whether to use jinja template engine for chat
--no-webui, --no-ui                     disable the web UI
--fake-load-seconds S                   (fake) seconds of 503 before ready
--fake-bind-delay S                     (fake) seconds before the port opens
--fake-crash-after S                    (fake) exit 1 while loading after S seconds
--fake-ignore-sigterm                   (fake) ignore SIGTERM
--fake-exit-delay G                     (fake) seconds to exit after SIGTERM
--fake-ready-file PATH                  (fake) write time.time() here when ready
--fake-child                            (fake) start a child in the same process group
--fake-busy-slots N                     (fake) serve /slots with N slots always processing
--fake-die-after S                      (fake) exit 3 after S seconds, ready or not
--fake-load-forever                     (fake) answer 503 loading for ever
--fake-loading-after S                  (fake) answer 503 loading again after S seconds
--fake-log PATH                         (fake) print PATH's lines at start (a recorded load log)
--fake-metrics                          (fake) serve /metrics (200) like --metrics does
--fake-chatty N                         (fake) print N numbered log lines per second
--fake-token-ms MS                      (fake) milliseconds per streamed token
"""


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-h", "--help", "--usage", action="store_true")
    p.add_argument("--version", action="store_true")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("-a", "--alias", default="fake")
    p.add_argument("--fake-load-seconds", type=float, default=0.2)
    p.add_argument("--fake-bind-delay", type=float, default=0.0)
    p.add_argument("--fake-crash-after", type=float, default=None)
    p.add_argument("--fake-ignore-sigterm", action="store_true")
    p.add_argument("--fake-exit-delay", type=float, default=0.0)
    p.add_argument("--fake-ready-file", default=None)
    p.add_argument("--fake-child", action="store_true")
    p.add_argument("--fake-busy-slots", type=int, default=None)
    p.add_argument("--fake-die-after", type=float, default=None)
    p.add_argument("--fake-load-forever", action="store_true")
    p.add_argument("--fake-loading-after", type=float, default=None)
    p.add_argument("--fake-log", default=None)
    p.add_argument("--fake-metrics", action="store_true")
    p.add_argument("--fake-chatty", type=float, default=None)
    p.add_argument("--fake-token-ms", type=float, default=2.0)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--ctx-size", type=int, default=4096)
    args, _unknown = p.parse_known_args(argv)
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.help:
        print(HELP)
        return 0
    if args.version:
        print(VERSION, file=sys.stderr)
        return 0

    started = time.monotonic()
    # A server that is going to crash never becomes ready first.
    ready_at = (float("inf") if args.fake_crash_after is not None or args.fake_load_forever
                else started + args.fake_load_seconds)

    if args.fake_ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif args.fake_exit_delay > 0:
        def slow_exit(signum, frame):  # noqa: ARG001
            print(f"fake: SIGTERM, exiting in {args.fake_exit_delay}s", flush=True)
            threading.Timer(args.fake_exit_delay, lambda: os._exit(0)).start()
        signal.signal(signal.SIGTERM, slow_exit)
    else:
        signal.signal(signal.SIGTERM, lambda s, f: os._exit(0))

    if args.fake_child:
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):  # keep the log quiet like a real server at info level
            pass

        def _send(self, code: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            reloading = args.fake_loading_after is not None and time.monotonic() - started > args.fake_loading_after
            if time.monotonic() < ready_at or reloading:
                self._send(503, {"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}})
                return
            if self.path == "/health":
                self._send(200, {"status": "ok"})
            elif self.path == "/slots" and args.fake_busy_slots is not None:
                # A server that never turns idle (with N > 0); an old build has no /slots at all.
                self._send(200, [{"id": i, "is_processing": i < args.fake_busy_slots}
                                 for i in range(max(1, args.fake_busy_slots))])
            elif self.path == "/metrics" and args.fake_metrics:
                busy = args.fake_busy_slots or 0
                body = ("# HELP llamacpp:requests_processing Number of requests processing.\n"
                        "# TYPE llamacpp:requests_processing gauge\n"
                        f"llamacpp:requests_processing {busy}\n"
                        "# HELP llamacpp:requests_deferred Number of requests deferred.\n"
                        "# TYPE llamacpp:requests_deferred gauge\n"
                        "llamacpp:requests_deferred 0\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/props":
                slots = max(1, args.parallel)
                self._send(200, {"total_slots": slots, "build_info": "b9999-fake",
                                 "default_generation_settings": {"n_ctx": args.ctx_size // slots}})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": args.alias, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found", "code": 404}})

        def _stream_completion(self, request: dict) -> None:
            """Server-sent events like llama-server's: a token every --fake-token-ms, then the
            final event with the timings."""
            began = time.perf_counter()
            prompt_n = len(str(request.get("prompt", "")).split()) + 1
            # each event goes out at once, as a real server's do (no Nagle delay against delayed ACKs)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
            first = None
            n = int(request.get("n_predict", 16))
            for i in range(n):
                time.sleep(args.fake_token_ms / 1000.0)
                if first is None:
                    first = time.perf_counter()
                event = {"index": 0, "content": f" w{i}", "tokens": [1000 + i], "stop": False, "id_slot": 0}
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.flush()
            ended = time.perf_counter()
            prompt_ms = ((first or ended) - began) * 1000
            predicted_ms = (ended - (first or ended)) * 1000
            final = {"index": 0, "content": "", "tokens": [], "stop": True, "id_slot": 0, "tokens_predicted": n,
                     "tokens_evaluated": prompt_n, "stop_type": "limit",
                     "timings": {"prompt_n": prompt_n, "prompt_ms": prompt_ms,
                                 "prompt_per_second": prompt_n / prompt_ms * 1000 if prompt_ms else 0.0,
                                 "predicted_n": n, "predicted_ms": predicted_ms,
                                 "predicted_per_second": n / predicted_ms * 1000 if predicted_ms else 0.0}}
            self.wfile.write(b"data: " + json.dumps(final).encode() + b"\n\n")
            self.wfile.flush()

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"{}")
            if time.monotonic() < ready_at:
                self._send(503, {"error": {"message": "Loading model", "code": 503}})
                return
            if self.path == "/completion" and request.get("stream"):
                self._stream_completion(request)
                return
            prompt = request.get("messages", [{}])[-1].get("content", "")
            self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant",
                                                                  "content": f"fake answer to: {prompt}"}}],
                             "model": args.alias})

    print(f"fake llama-server: pid {os.getpid()} port {args.port}", flush=True)
    if args.fake_log:
        with open(args.fake_log, encoding="utf-8") as recorded:
            print(recorded.read(), end="", flush=True)
    if args.fake_bind_delay > 0:
        time.sleep(args.fake_bind_delay)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("fake: model loading", flush=True)

    if args.fake_ready_file:
        def mark_ready() -> None:
            delay = ready_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with open(args.fake_ready_file, "w") as handle:
                handle.write(f"{time.time():.6f}\n")
        threading.Thread(target=mark_ready, daemon=True).start()

    if args.fake_chatty:
        def chatter() -> None:
            # Unbuffered writes straight to the log (O_APPEND), as llama-server's own logging does.
            for i in itertools.count():
                os.write(1, f"chatty {i:09d} {'x' * 40}\n".encode())
                time.sleep(1.0 / args.fake_chatty)
        threading.Thread(target=chatter, daemon=True).start()

    if args.fake_crash_after is not None:
        time.sleep(args.fake_crash_after)
        print("llama_model_load: error loading model: fake corrupted tensor data", flush=True)
        print("main: exiting due to model loading error", flush=True)
        return 1
    if args.fake_die_after is not None:
        time.sleep(max(0.0, started + args.fake_die_after - time.monotonic()))
        print("fake: GGML_ASSERT failed: crashing on purpose", flush=True)
        os._exit(3)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
