"""The one table of exit codes. README.md documents the same table; keep them together."""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    OK = 0
    FAILED = 1  # the operation ran and something did not work (a server failed to start/stop)
    USAGE = 2  # bad command line (click's own convention for usage errors)
    CONFIG = 3  # configuration is invalid: run `kitty-ops validate` for the full list
    BUSY = 4  # another kitty-ops start/stop holds the lock
    UNAVAILABLE = 5  # a tool or image the stack needs is missing or down (docker CLI, daemon, compose v2, a pull)
    INTERRUPTED = 130  # Ctrl+C or SIGTERM; what this invocation started was stopped again


DESCRIPTIONS = {
    Exit.OK: "success",
    Exit.FAILED: "an operation failed (a server did not start, stop or answer; a bench found a regression)",
    Exit.USAGE: "bad command-line usage",
    Exit.CONFIG: "configuration invalid (see `kitty-ops validate`)",
    Exit.BUSY: "another kitty-ops start/stop is running (lock held)",
    Exit.UNAVAILABLE: "Docker is unavailable (CLI, daemon or compose v2 missing) or an image cannot be pulled; "
                      "nothing started",
    Exit.INTERRUPTED: "interrupted; what this run started was stopped",
}


class Health(enum.IntEnum):
    """`kitty-ops health` follows the monitoring-plugin convention instead (Nagios, Icinga,
    Sensu, check_mk all read these): the code is the worst state of any component."""

    OK = 0  # every component healthy
    WARNING = 1  # something is starting or loading (a llama server answering 503)
    CRITICAL = 2  # something is down, dead, unhealthy or not answering
    UNKNOWN = 3  # the check itself failed: bad arguments, its own deadline, a previous run still running


HEALTH_DESCRIPTIONS = {
    Health.OK: "every component healthy",
    Health.WARNING: "a component is starting or loading its model",
    Health.CRITICAL: "a component is down, dead, unhealthy or not answering",
    Health.UNKNOWN: "the check could not run (bad arguments, its deadline, a previous run still running)",
}
