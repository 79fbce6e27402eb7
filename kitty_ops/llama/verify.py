"""After a llama-server turns healthy: read what it really runs on, and check that the endpoints
it was asked for answer. The reading and asking are here; the judging is pure elsewhere
(kitty_ops.llama.offload), and start (kitty_ops.llama.lifecycle) decides what fails.

Why after healthy: the device lines are written while the model loads, so a healthy server's log
holds them all; and `/health` says 200 whether the model sits on a GPU or fell back to the CPU,
or whether the `/metrics` that Prometheus is about to scrape exists. `/props` names no device
(llama.cpp's `/props` has the model, the slots, the chat template, `endpoint_metrics` and the
build), so the log is what tells the device; `/props` tells whether the metrics endpoint is on.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

from kitty_ops.host import probes, records
from kitty_ops.llama import offload

LOG_HEAD_BYTES = 1024 * 1024  # the load lines come first; a large model's metadata dump is ~100 KiB
PROBE_TIMEOUT = 2.0


def offload_of(record: records.EngineRecord, max_bytes: int = LOG_HEAD_BYTES) -> offload.Offload:
    """What this run of the server runs on, from its log (this run's part: from the record's
    offset on)."""
    return offload.parse(records.head(Path(record.log), record.log_offset, max_bytes))


def props(url: str, headers: dict[str, str] | None = None,
          timeout: float = PROBE_TIMEOUT) -> dict | None:
    """The server's `/props`, None when it does not answer with a JSON object."""
    try:
        code, body = probes.http_request(url + "/props", "GET", None, timeout, headers)
        data = json.loads(body) if code == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    return data if isinstance(data, dict) else None


def metrics_problem(url: str, headers: dict[str, str] | None = None,
                    timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why `/metrics` does not answer 200 (with the API key, when the server has one); None when
    it does."""
    try:
        code, body = probes.http_request(url + "/metrics", "GET", None, timeout, headers)
    except (socket.timeout, TimeoutError):
        return f"/metrics did not answer within {timeout:g}s"
    except (OSError, http.client.HTTPException) as exc:
        return f"/metrics did not answer ({exc.__class__.__name__}: {exc})"
    if code == 200:
        return None
    said = _message(body)
    problem = f"/metrics answered HTTP {code}" + (f" ({said})" if said else "")
    if code in (401, 403):
        return problem + ": it refuses kitty-ops's API key"
    found = props(url, headers, timeout)
    if found is not None and found.get("endpoint_metrics") is False:
        problem += "; its /props says endpoint_metrics is false"
    return problem


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return str(data["error"].get("message", ""))[:200]
    except ValueError:
        pass
    return body[:200].decode("utf-8", errors="replace").strip()
