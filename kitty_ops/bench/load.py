"""The load: streamed `/completion` requests against one llama-server, one HTTP connection per
request, a thread per concurrent stream.

Each request asks for exactly `n_predict` tokens (`ignore_eos`), at temperature 0 with a fixed
seed and `cache_prompt: false`, so every run does the same work and no answer is shortened by
an end-of-sequence token or served from the prompt cache. The answer is streamed
(`"stream": true`: server-sent events, `data: {...}` lines): the arrival of the first token is
the time to first token, and the last event (`stop: true`) carries the server's own `timings`.
The standard library's http.client does the HTTP (no third-party import, and nothing between
the socket and the clock that could batch events).

Every wait has a deadline: a socket timeout on each read, the bench's overall deadline checked
at each event and before each new request. A request that fails asks `alive()` whether the
server is still running; when it is not, the level ends at once with that reason.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
import threading
import time
from typing import Callable
from urllib.parse import urlsplit

from kitty_ops.bench.stats import RequestResult, ServerTimings
from kitty_ops.host import probes

REQUEST_TIMEOUT = 120.0  # seconds any one read of a streamed answer may take
JOIN_GRACE = 5.0  # seconds past the deadline a worker gets to notice it and return


def completion_body(prompt: str, max_tokens: int, seed: int) -> dict:
    return {"prompt": prompt, "n_predict": max_tokens, "stream": True, "cache_prompt": False,
            "temperature": 0, "seed": seed, "ignore_eos": True, "return_tokens": True}


def parse_event(line: bytes) -> dict | None:
    """One server-sent-event line -> its JSON object; None for anything else (blank lines,
    comments, `data: [DONE]`)."""
    line = line.strip()
    if not line.startswith(b"data:"):
        return None
    payload = line[5:].strip()
    if not payload or payload == b"[DONE]":
        return None
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def tokens_in(event: dict) -> int:
    """Generated tokens an event carries: its `tokens` ids when the server sends them, else one
    for a non-empty `content` (a partial event is one token; a token that ends inside a UTF-8
    character is held back and sent with the next)."""
    ids = event.get("tokens")
    if isinstance(ids, list) and ids:
        return len(ids)
    return 1 if event.get("content") and not event.get("stop") else 0


def _error_text(event: dict) -> str:
    error = event.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def stream_completion(url: str, body: dict, headers: dict[str, str], deadline: float, index: int = 0,
                      timeout: float = REQUEST_TIMEOUT, clock: Callable[[], float] = time.perf_counter) -> RequestResult:
    """POST `body` to `url`/completion and read the stream to its end (or the deadline)."""
    parts = urlsplit(url)
    started = clock()
    tokens, first, last, timings = 0, None, None, None

    def failed(error: str) -> RequestResult:
        return RequestResult(index, started, clock(), tokens, first, last, timings, error)

    remaining = deadline - started
    if remaining <= 0:
        return failed("the bench's deadline had passed")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=min(timeout, remaining))
    try:
        conn.request("POST", "/completion", json.dumps(body).encode(),
                     {"Content-Type": "application/json", "Accept": "text/event-stream", **headers})
        response = conn.getresponse()
        if response.status != 200:
            text = response.read(2000)
            detail = _error_text(json.loads(text)) if text.startswith(b"{") else text.decode(errors="replace")
            return failed(f"HTTP {response.status}: {detail}"[:300])
        while True:
            line = response.readline()
            now = clock()
            if not line:
                return failed("the stream ended before its final event")
            event = parse_event(line)
            if event is not None:
                if "error" in event:
                    return failed(f"server error: {_error_text(event)}"[:300])
                count = tokens_in(event)
                if count:
                    tokens += count
                    first = now if first is None else first
                    last = now
                if event.get("stop"):
                    timings = ServerTimings.from_json(event.get("timings"))
                    return RequestResult(index, started, now, tokens, first, last, timings)
            if now > deadline:
                return failed("cut at the bench's deadline")
    except (socket.timeout, TimeoutError):
        return failed(f"no answer within {min(timeout, remaining):.0f}s")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return failed(f"{exc.__class__.__name__}: {exc}"[:300])
    finally:
        conn.close()


@dataclasses.dataclass
class Level:
    """What one level's run left behind: the results, its wall time, and why it ended early."""

    results: list[RequestResult]
    wall: float
    aborted: str = ""  # the server died, or the deadline passed with requests left


def run_level(url: str, headers: dict[str, str], concurrency: int, requests: int,
              body_for: Callable[[int], dict], deadline: float, alive: Callable[[], bool],
              clock: Callable[[], float] = time.perf_counter) -> Level:
    """`requests` requests, `concurrency` at a time, each worker taking the next index as soon as
    its previous answer ended. Ends early when the server dies or the deadline passes."""
    results: list[RequestResult] = []
    lock = threading.Lock()
    stop = threading.Event()
    next_index = [0]
    reason = [""]

    def worker() -> None:
        while not stop.is_set():
            with lock:
                index = next_index[0]
                if index >= requests:
                    return
                next_index[0] += 1
            if clock() >= deadline:
                with lock:
                    reason[0] = reason[0] or "the deadline passed"
                stop.set()
                return
            result = stream_completion(url, body_for(index), headers, deadline, index, clock=clock)
            with lock:
                results.append(result)
            if not result.ok and not alive():
                with lock:
                    reason[0] = reason[0] or "the server exited"
                stop.set()

    threads = [threading.Thread(target=worker, name=f"bench-{i}", daemon=True) for i in range(concurrency)]
    began = clock()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - clock()) + JOIN_GRACE)
    except BaseException:  # Ctrl+C: the workers take no new request; their sockets close with them
        stop.set()
        raise
    ended = max([r.ended for r in results], default=clock())
    with lock:
        if any(t.is_alive() for t in threads):
            stop.set()
            reason[0] = reason[0] or "requests still open after the deadline"
        done = list(results)
    if len(done) < requests and not reason[0]:
        reason[0] = "the deadline passed"
    return Level(sorted(done, key=lambda r: r.index), max(0.0, ended - began), reason[0])


def get(url: str, path: str, headers: dict[str, str], timeout: float = 5.0) -> tuple[int | None, bytes]:
    """GET `path`; (None, b"") when the server does not answer."""
    try:
        return probes.http_request(url + path, "GET", None, timeout, headers)
    except (OSError, http.client.HTTPException):
        return None, b""


def props(url: str, headers: dict[str, str], timeout: float = 5.0) -> dict:
    """The server's `/props` (slots, context, build), {} when it has none."""
    code, body = get(url, "/props", headers, timeout)
    if code != 200:
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def tokenize_count(url: str, headers: dict[str, str], text: str, timeout: float = 10.0) -> int | None:
    """How many tokens the server's tokenizer makes of `text` (its `/tokenize`), None when it
    cannot say."""
    try:
        code, body = probes.http_request(url + "/tokenize", "POST", json.dumps({"content": text}).encode(), timeout,
                                         {"Content-Type": "application/json", **headers})
        tokens = json.loads(body).get("tokens") if code == 200 else None
    except (OSError, http.client.HTTPException, ValueError, AttributeError):
        return None
    return len(tokens) if isinstance(tokens, list) else None
