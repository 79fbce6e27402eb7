#!/usr/bin/env python3
"""Run the kitty-ops benchmarks one after another (`make bench`).

Timing never fails a benchmark; a benchmark that crashes (could not start its servers, a server
left running, ...) does, and makes this exit non-zero. --quick shortens every benchmark.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("readiness_latency.py", "stop_time.py", "status_time.py", "stack_start.py", "health_check.py",
           "compose_tier.py", "backup_postgres.py", "emergency_stop.py", "drain_stop.py", "supervise.py",
           "bench_overhead.py")
QUICK = {
    "readiness_latency.py": ["--runs", "8", "--cli-runs", "2", "--baseline-runs", "2"],
    "stop_time.py": ["--runs", "1"],
    "status_time.py": ["--runs", "5"],
    "stack_start.py": ["--runs", "1"],
    "health_check.py": ["--runs", "2"],
    "compose_tier.py": ["--runs", "1"],
    "backup_postgres.py": ["--runs", "1", "--size-mb", "100"],
    "emergency_stop.py": ["--runs", "1"],
    "drain_stop.py": ["--runs", "1"],
    "supervise.py": ["--crashes", "5", "--restarts", "2", "--idle-seconds", "5"],
    "bench_overhead.py": ["--requests", "3", "--max-tokens", "32"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs of each (a smoke test, ~25 s)")
    args = parser.parse_args(argv)
    began = time.monotonic()
    failures = []
    for script in SCRIPTS:
        extra = QUICK[script] if args.quick else []
        code = subprocess.call([sys.executable, str(HERE / script), *extra], cwd=HERE.parent)
        print(flush=True)
        if code != 0:
            failures.append(f"{script} (exit {code})")
    print(f"run_all: {len(SCRIPTS)} benchmarks in {time.monotonic() - began:.1f} s"
          + (f"; CRASHED: {', '.join(failures)}" if failures else "; all ran (see PASS/MISS above)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
