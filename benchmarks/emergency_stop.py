#!/usr/bin/env python3
"""Emergency stop of a stack that does not want to stop, against the graceful stop-all of the
same stack, measured in the same run.

The stack: two fake llama servers (q4 ignores SIGTERM), the compose tier (postgres, redis,
mosquitto, rustfs) and an extra container whose PID 1 ignores SIGTERM, with the default grace
times (KITTY_STOP_GRACE=10, KITTY_COMPOSE_STOP_TIMEOUT=10). Each variant runs --runs times on a
freshly started stack:
  emergency-stop.sh           kitty-ops emergency-stop (SIGKILL, docker kill + rm -f, ports checked)
  emergency-stop.sh, fallback the same with kitty-ops unavailable: the pure-bash path
  stop-all.sh (baseline)      the graceful stop: SIGTERM, wait the grace, SIGKILL; compose stop
Target: the emergency stop within its 15 s deadline. Timing never fails the run (exit 0).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from common import docker_test_image, header, started, temp_stack, verdict

from tests.harness import REPO

SCRIPTS = REPO / "ops" / "scripts"
STUBBORN = """services:
  stubborn:
    image: ${KITTY_TEST_IMAGE:?}
    entrypoint: ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]
    healthcheck: {test: ["CMD", "true"], interval: 500ms, timeout: 3s, retries: 60, start_period: 0s}
"""


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    return time.perf_counter() - began, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    header("emergency stop vs graceful stop-all, on a stack that ignores SIGTERM")
    image = docker_test_image()
    if image is None:
        return 1
    results: dict[str, list[tuple[float, int]]] = {}
    with temp_stack("emergency", image) as project:
        project.add_override(STUBBORN)
        project.stack_env({"q4": "--fake-ignore-sigterm", "f16": ""}, profiles="", KITTY_LOGS_DIR=project.logs,
                          KITTY_STOP_GRACE=10, KITTY_COMPOSE_STOP_TIMEOUT=10)
        env_file = str(project.env_file)
        variants = {
            "emergency-stop.sh": ([str(SCRIPTS / "emergency-stop.sh"), "--env-file", env_file], {}),
            "emergency-stop.sh, bash fallback": ([str(SCRIPTS / "emergency-stop.sh"), "--env-file", env_file],
                                                 {"KITTY_OPS_BIN": str(project.root / "no-kitty-ops")}),
            "stop-all.sh (graceful baseline)": ([str(SCRIPTS / "stop-all.sh"), "--env-file", env_file], {}),
        }
        for _ in range(args.runs):
            for name, (command, extra) in variants.items():
                if not started(project):
                    return 1
                results.setdefault(name, []).append(timed(command, {**project.env(), **extra}))
                if project.containers():
                    print(f"{name} left containers: {project.containers()}", file=sys.stderr)
                    return 1
    medians = {}
    for name, runs in results.items():
        walls = [w for w, _ in runs]
        medians[name] = statistics.median(walls)
        print(f"  {name:<34} runs {', '.join(f'{w:.2f}' for w in walls)} s   median {medians[name]:6.2f} s   "
              f"exit {','.join(str(c) for _, c in runs)}")
    fast = medians["emergency-stop.sh"]
    print(f"emergency stop {fast:.2f} s (target: within the 15 s deadline: {verdict(fast, 15.0)}); "
          f"graceful stop-all {medians['stop-all.sh (graceful baseline)'] / fast:.1f}x longer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
