"""The bench's arithmetic, pure: what one request measured, percentiles, one concurrency level's
figures, and the cross-checks against the server's own account.

Two clocks are kept apart on purpose. The client's (time.perf_counter at each streamed event) is
what a caller of the server lives with; the server's (`timings` in the final event of each
answer) excludes HTTP and queueing. Both are reported. For the agreement check they are compared
like for like: llama-server's `predicted_per_second` divides all n generated tokens by the time
of the last n-1 (the first one comes out of the prompt's own decode), so the comparable server
figure is (n-1) / predicted_ms, and the client's is (tokens after the first) / (time after the
first).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

# Client and server generation rates further apart than this are flagged (not failed): on a busy
# machine the client's threads and the HTTP stream add their own delays.
AGREEMENT_TOLERANCE = 0.25


@dataclasses.dataclass(frozen=True)
class ServerTimings:
    """The `timings` object of llama-server's final event (milliseconds and tokens/s)."""

    prompt_n: int
    prompt_ms: float
    prompt_per_second: float
    predicted_n: int
    predicted_ms: float
    predicted_per_second: float

    @classmethod
    def from_json(cls, data: object) -> "ServerTimings | None":
        if not isinstance(data, dict):
            return None
        try:
            return cls(int(data["prompt_n"]), float(data["prompt_ms"]), float(data.get("prompt_per_second") or 0.0),
                       int(data["predicted_n"]), float(data["predicted_ms"]),
                       float(data.get("predicted_per_second") or 0.0))
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def generation_rate(self) -> float | None:
        """Tokens/s over the tokens after the first: comparable with the client's rate."""
        if self.predicted_n < 2 or self.predicted_ms <= 0:
            return None
        return (self.predicted_n - 1) / (self.predicted_ms / 1000.0)


@dataclasses.dataclass(frozen=True)
class RequestResult:
    """One streamed /completion, on the client's clock (seconds, time.perf_counter)."""

    index: int
    started: float
    ended: float
    tokens: int = 0  # tokens received in the stream
    first_token: float | None = None  # when the first token arrived
    last_token: float | None = None
    timings: ServerTimings | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started

    @property
    def latency(self) -> float:
        return self.ended - self.started

    @property
    def generation_rate(self) -> float | None:
        """Client tokens/s: the tokens after the first over the time after the first."""
        if self.tokens < 2 or self.first_token is None or self.last_token is None:
            return None
        span = self.last_token - self.first_token
        return (self.tokens - 1) / span if span > 0 else None

    @property
    def prompt_rate(self) -> float | None:
        """Client-side prompt tokens/s: the server's prompt tokens over the time to the first
        token (so it includes the HTTP round trip and any wait for a slot)."""
        ttft = self.ttft
        if self.timings is None or not ttft or ttft <= 0:
            return None
        return self.timings.prompt_n / ttft


def percentile(values: Iterable[float], p: float) -> float | None:
    """The p-th percentile (0-100) with linear interpolation between ranks (numpy's default);
    None for no values."""
    xs = sorted(values)
    if not xs:
        return None
    k = (len(xs) - 1) * min(max(p, 0.0), 100.0) / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def mean(values: Iterable[float]) -> float | None:
    xs = list(values)
    return sum(xs) / len(xs) if xs else None


@dataclasses.dataclass(frozen=True)
class Agreement:
    """The client's generation rate against the server's own (median per request, like for like)."""

    client: float | None
    server: float | None
    tolerance: float = AGREEMENT_TOLERANCE

    @property
    def ratio(self) -> float | None:
        if not self.client or not self.server:
            return None
        return self.client / self.server

    @property
    def ok(self) -> bool | None:
        """None when either side is missing; else whether they agree within the tolerance."""
        ratio = self.ratio
        return None if ratio is None else abs(ratio - 1.0) <= self.tolerance

    def as_dict(self) -> dict:
        return {"client_tps": _round(self.client), "server_tps": _round(self.server),
                "ratio": _round(self.ratio, 3), "tolerance": self.tolerance, "ok": self.ok}


@dataclasses.dataclass(frozen=True)
class MetricsCheck:
    """The server's `llamacpp:tokens_predicted_total` over the level against what we received."""

    predicted_delta: int
    received: int

    @property
    def ok(self) -> bool:
        return self.predicted_delta >= self.received

    def as_dict(self) -> dict:
        return {"tokens_predicted_delta": self.predicted_delta, "tokens_received": self.received, "ok": self.ok}


@dataclasses.dataclass(frozen=True)
class LevelStats:
    """The figures of one concurrency level (seconds; tokens/s)."""

    concurrency: int
    requests: int  # planned
    completed: int
    errors: int
    wall: float  # first request sent to last one ended
    tokens: int  # generated tokens received, all requests
    ttft_p50: float | None
    ttft_p95: float | None
    latency_p50: float | None
    latency_p95: float | None
    gen_tps_p50: float | None  # per request, client clock
    gen_tps_min: float | None
    server_gen_tps_p50: float | None  # per request, the server's predicted_per_second as it reports it
    aggregate_tps: float | None  # all generated tokens / wall
    prompt_tps_p50: float | None  # the server's prompt_per_second
    client_prompt_tps_p50: float | None  # prompt tokens / TTFT
    prompt_tokens: int | None  # median prompt_n
    agreement: Agreement
    error_samples: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["agreement"] = self.agreement.as_dict()
        data["error_samples"] = list(self.error_samples)
        return {k: _round(v) if isinstance(v, float) else v for k, v in data.items()}


def level_stats(concurrency: int, planned: int, results: Sequence[RequestResult], wall: float) -> LevelStats:
    good = [r for r in results if r.ok]
    bad = [r for r in results if not r.ok]
    ttfts = [r.ttft for r in good if r.ttft is not None]
    latencies = [r.latency for r in good]
    rates = [r.generation_rate for r in good if r.generation_rate is not None]
    server_rates = [r.timings.predicted_per_second for r in good if r.timings and r.timings.predicted_per_second]
    comparable = [r.timings.generation_rate for r in good if r.timings and r.timings.generation_rate]
    prompt_rates = [r.timings.prompt_per_second for r in good if r.timings and r.timings.prompt_per_second]
    client_prompt = [r.prompt_rate for r in good if r.prompt_rate]
    prompt_ns = [r.timings.prompt_n for r in good if r.timings]
    tokens = sum(r.tokens for r in good)
    median_prompt = percentile(prompt_ns, 50)
    samples: list[str] = []
    for r in bad:
        if r.error not in samples:
            samples.append(r.error)
    return LevelStats(
        concurrency=concurrency, requests=planned, completed=len(good), errors=len(bad), wall=wall,
        tokens=tokens,
        ttft_p50=percentile(ttfts, 50), ttft_p95=percentile(ttfts, 95),
        latency_p50=percentile(latencies, 50), latency_p95=percentile(latencies, 95),
        gen_tps_p50=percentile(rates, 50), gen_tps_min=min(rates) if rates else None,
        server_gen_tps_p50=percentile(server_rates, 50),
        aggregate_tps=tokens / wall if wall > 0 and tokens else None,
        prompt_tps_p50=percentile(prompt_rates, 50), client_prompt_tps_p50=percentile(client_prompt, 50),
        prompt_tokens=None if median_prompt is None else int(round(median_prompt)),
        agreement=Agreement(percentile(rates, 50), percentile(comparable, 50)),
        error_samples=tuple(samples[:3]),
    )


def parse_metric(text: str, name: str) -> float | None:
    """A counter or gauge from a Prometheus text exposition (`name value`, or `name{...} value`,
    summed over its label sets); None when it is not there."""
    found = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        metric, _, rest = line.partition(" ")
        if metric.split("{", 1)[0] != name:
            continue
        try:
            found = (found or 0.0) + float(rest.split()[0])
        except (ValueError, IndexError):
            continue
    return found


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
