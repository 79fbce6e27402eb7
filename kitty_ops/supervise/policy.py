"""When to restart, how long to wait, when to give up, what counts as a hang. Pure: numbers in,
decisions out; the loop (kitty_ops.supervise.loop) acts on them.

- Backoff: `initial * 2**(streak-1)`, capped at `max` (systemd's RestartSec with
  RestartSteps, supervisord's growing startsecs). The streak starts again from 1 once the
  component was healthy for `reset` seconds before it failed.
- Crash loop: `max_failures` failures within `window` seconds (systemd's StartLimitBurst and
  StartLimitIntervalSec): no more restarts; state `failed` until the operator asks again.
- Hang: `hang_probes` failed /health probes in a row from a process that is alive. A 503
  ("Loading model") is never a failure: a 70B model loads for minutes.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from kitty_ops.config import SuperviseSettings
from kitty_ops.host import probes


@dataclasses.dataclass(frozen=True)
class Policy:
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    backoff_reset: float = 60.0
    max_failures: int = 5
    window: float = 300.0
    hang_probes: int = 3

    @classmethod
    def from_settings(cls, settings: SuperviseSettings) -> "Policy":
        return cls(settings.backoff_initial, settings.backoff_max, settings.backoff_reset,
                   settings.max_failures, settings.failure_window, settings.hang_probes)


@dataclasses.dataclass(frozen=True)
class Decision:
    give_up: bool
    delay: float  # seconds before the restart (0 when giving up)
    streak: int  # failures in a row since the component was last healthy for `backoff_reset`
    recent: int  # failures within the window, this one included


def backoff(policy: Policy, streak: int) -> float:
    if streak <= 0:
        return 0.0
    return min(policy.backoff_max, policy.backoff_initial * (2 ** min(streak - 1, 62)))


def next_streak(policy: Policy, streak: int, healthy_for: float | None) -> int:
    """The streak after one more failure; `healthy_for`: seconds it had been healthy, None when
    it never turned healthy since the last failure."""
    if healthy_for is not None and healthy_for >= policy.backoff_reset:
        return 1
    return streak + 1


def decide(policy: Policy, failures: Sequence[float], now: float, streak: int) -> Decision:
    """After a failure at `now` (monotonic); `failures` holds earlier failure times and this one."""
    recent = sum(1 for t in failures if now - t < policy.window)
    if recent >= policy.max_failures:
        return Decision(True, 0.0, streak, recent)
    return Decision(False, backoff(policy, streak), streak, recent)


def prune(policy: Policy, failures: Sequence[float], now: float) -> list[float]:
    return [t for t in failures if now - t < policy.window]


def probe_failed(health: probes.Health) -> bool:
    """Does this probe count towards a hang? 200 and 503-loading do not."""
    return health not in (probes.Health.READY, probes.Health.LOADING)


def is_hang(policy: Policy, failed_in_a_row: int) -> bool:
    return failed_in_a_row >= policy.hang_probes
