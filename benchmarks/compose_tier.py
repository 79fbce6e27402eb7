#!/usr/bin/env python3
"""The container tier alone: `kitty-ops start/stop --skip llama` against plain `docker compose`.

The same compose files, project name and env file for both (the real compose file plus the test
override: postgres, redis, mosquitto and the object store, on the test image of
ops/dev/test-docker-engine.sh). Per round, on fresh volumes, in alternating order so that
background noise and engine caches hit both alike:

  kitty-ops start   `python -m kitty_ops start --skip llama` (interpreter start, validation, the
                    Docker preflight, image check, graph, every container healthy, port checks)
  compose up        `docker compose ... up -d --wait` (every container healthy)
  kitty-ops stop    `python -m kitty_ops stop --skip llama` (containers stopped and removed,
                    volumes kept)
  compose down      `docker compose ... down` (the same)

With --before REV, kitty-ops as it was at git revision REV runs as a third variant in the same
rounds (a temporary worktree): the before/after of a change, measured together.

Targets: start <= 1.0 x compose up, stop <= 1.0 x compose down (medians). Timing never fails the
run (exit 0); it exits 1 only when a start or stop did not do its job.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tests.harness import COMPOSE_BASE, COMPOSE_TEST  # noqa: E402

SERVICES = ["mosquitto", "postgres", "redis", "rustfs"]
TARGET = 1.0


class Tier:
    def __init__(self, project: common.StackProject):
        self.project = project
        project.stack_env({}, profiles="", LLAMACPP_SERVERS="")

    def compose(self, *args: str) -> subprocess.CompletedProcess:
        files = [a for f in [COMPOSE_BASE, COMPOSE_TEST] for a in ("-f", str(f))]
        env = {**os.environ, "KITTY_ENV_FILE": str(self.project.env_file)}
        return subprocess.run(["docker", "compose", "-p", self.project.compose_project, "--env-file",
                               str(self.project.env_file), *files, "--profile", "rustfs", *args],
                              capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL)

    def fresh(self) -> None:
        """No containers, no volumes; then a pause so the engine has finished removing them."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "1")
        time.sleep(1.5)

    def running(self) -> list[str]:
        done = self.compose("ps", "--format", "json")
        found = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        return sorted(c["Service"] for c in found if c.get("State") == "running")

    def timed(self, what: str, argv_or_args: tuple[str, ...], expect_running: list[str],
              extra_env: dict[str, str] | None = None) -> float:
        if what == "compose":
            started = time.perf_counter()
            done = self.compose(*argv_or_args)
            seconds = time.perf_counter() - started
        else:
            seconds, done = common.timed_run(self.project, *argv_or_args, timeout=300, extra_env=extra_env)
        if done.returncode != 0:
            raise RuntimeError(f"{what} {' '.join(argv_or_args)} exited {done.returncode}: {done.stderr[-2000:]}")
        if self.running() != expect_running:
            raise RuntimeError(f"after {what} {' '.join(argv_or_args)}: running {self.running()}, "
                               f"expected {expect_running}")
        return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="rounds of each variant (default 5)")
    parser.add_argument("--before", metavar="REV", help="also run kitty-ops as of this git revision")
    args = parser.parse_args(argv)

    common.header("compose_tier: the container tier, kitty-ops against docker compose alone")
    image = common.docker_test_image()
    if image is None:
        print("no Docker engine: cannot run", file=sys.stderr)
        return 1
    began = time.monotonic()
    results: dict[str, list[float]] = {"start": [], "up": [], "stop": [], "down": [], "start_before": [],
                                       "stop_before": []}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(common.REPO / "kitty_ops")], capture_output=True)
    kitty_start, kitty_stop = ("start", "--skip", "llama"), ("stop", "--skip", "llama")
    with common.temp_stack("tier", image) as project, common.kitty_ops_at(args.before) as before_env:
        tier = Tier(project)
        tier.compose("pull", "--quiet", "--ignore-buildable")  # no pull inside any clock
        variants = [("kitty-ops", kitty_start, kitty_stop, "start", "stop", None),
                    ("compose", ("up", "-d", "--wait"), ("down",), "up", "down", None)]
        if args.before:
            variants.append(("kitty-ops", kitty_start, kitty_stop, "start_before", "stop_before", before_env))
        for what, up, down, _, _, env in variants:  # warm-up, not counted: page cache, the engine's caches
            tier.fresh()
            tier.timed(what, up, SERVICES, env)
            tier.timed(what, down, [], env)
        for round_ in range(args.runs):
            for what, up, down, up_key, down_key, env in (variants if round_ % 2 == 0 else variants[::-1]):
                tier.fresh()
                results[up_key].append(tier.timed(what, up, SERVICES, env))
                results[down_key].append(tier.timed(what, down, [], env))

    labels = {"start": "kitty-ops start --skip llama", "up": "docker compose up -d --wait",
              "stop": "kitty-ops stop --skip llama", "down": "docker compose down"}
    if args.before:
        labels.update({"start_before": f"  the same, as of {args.before}", "stop_before": f"  stop, as of {args.before}"})
    for key, label in labels.items():
        print(f"{label:<34}{common.summary_s(results[key])}")
    med = {key: common.percentile(values, 50) for key, values in results.items() if values}
    print("-" * 78)
    for ours, peer in (("start", "up"), ("stop", "down")):
        ratio = med[ours] / med[peer]
        print(f"{ours}: {med[ours]:.2f} s against {med[peer]:.2f} s -> ratio {ratio:.2f} "
              f"(target <= {TARGET:.1f}): {common.verdict(ratio, TARGET)}")
        if args.before:
            print(f"  as of {args.before}: {med[ours + '_before']:.2f} s -> ratio "
                  f"{med[ours + '_before'] / med[peer]:.2f}")
    print(f"elapsed {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
