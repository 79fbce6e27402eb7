#!/usr/bin/env python3
"""Health check: `kitty-ops health` on 8 components, healthy and with one black-holed, against
the seed manual's sequential `curl -sf` loop, measured in the same run.

The stack (started once with `kitty-ops start`): three fake llama servers (q4, f16, summary) and
the real compose tier on the local Docker engine (postgres, redis, mosquitto, rustfs, brain; the
test image from ops/dev/test-docker-engine.sh): 8 components.

Black hole: the summary server is suspended with SIGSTOP. Its socket still accepts connections
(the kernel completes the handshake) but nothing ever answers: what a hung server looks like.
A third phase suspends all three llama servers: the sequential loop pays T for each.

Measured, round by round so machine noise hits every variant alike, each as a fresh process:
  floor                 `python -c pass`
  kitty-ops health      `python -m kitty_ops health --quiet --timeout T` (T = --timeout, 2 s):
                        interpreter, config, 3 identity checks and probes, `docker ps` +
                        `docker inspect` + `docker compose config`, all at once
  manual curl loop      the seed manual's check, in bash: `curl -sf --max-time T .../health` for
                        each HTTP endpoint (the llama servers, brain) one after another, then
                        `docker inspect -f {{.State.Health.Status}}` for each container. (The
                        manual's loop had no --max-time; with one it never returns on a black
                        hole, so the baseline is given the same T to be measurable at all.)
Targets: black-holed (one or three), kitty-ops <= T + 0.5 s; healthy, kitty-ops <= 0.5 s wall.
Timing never fails the run (exit 0); PASS/MISS is information.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import docker_test_image, header, started, temp_stack, verdict

from tests.harness import StackProject

SERVERS = ("q4", "f16", "summary")
CONTAINERS = ("postgres", "redis", "mosquitto", "rustfs", "brain")
HOLE = "summary"


def timed(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, int, str]:
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
                          env=env, cwd=cwd)
    return time.perf_counter() - began, done.returncode, done.stdout


def manual_loop(project: StackProject, ports: dict[str, int], timeout: float) -> list[str]:
    """The seed manual's sequential check as a bash command line (argv, no configuration in it)."""
    urls = [f"http://127.0.0.1:{ports[n]}/health" for n in SERVERS] + [f"http://127.0.0.1:{ports['BRAIN_PORT']}/health"]
    names = [f"{project.compose_project}-{c}-1" for c in CONTAINERS if c != "brain"]
    script = ('t="$1"; shift; rc=0; for u in "${@:1:4}"; do curl -sf --max-time "$t" "$u" >/dev/null || '
              '{ echo "DOWN $u"; rc=2; }; done; for c in "${@:5}"; do '
              's=$(docker inspect -f "{{.State.Health.Status}}" "$c") ; [ "$s" = healthy ] || '
              '{ echo "DOWN $c"; rc=2; }; done; exit $rc')
    return ["bash", "-c", script, "manual", f"{timeout:g}", *urls, *names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=2.0, help="probe timeout T (seconds)")
    args = parser.parse_args(argv)
    header("health check: kitty-ops health vs the seed manual's sequential curl loop (8 components)")
    image = docker_test_image()
    if image is None:
        return 1
    results: dict[str, list[tuple[float, int]]] = {}
    with temp_stack("health", image) as project:
        ports = project.stack_env({n: "" for n in SERVERS})
        if not started(project):
            return 1
        kitty = project.argv("health", "--quiet", "--timeout", f"{args.timeout:g}")
        loop = manual_loop(project, ports, args.timeout)
        variants = {"floor": [sys.executable, "-c", "pass"], "kitty-ops health": kitty, "manual curl loop": loop}
        pids = {n: project.record(n)["pid"] for n in SERVERS}
        phases = {"healthy": [], "black-holed": [HOLE], "3 black-holed": list(SERVERS)}
        try:
            for phase, holes in phases.items():
                for name in holes:
                    os.kill(pids[name], signal.SIGSTOP)
                for _ in range(args.runs):
                    for name, command in variants.items():
                        seconds, code, _ = timed(command, env=project.env(), cwd=project.root)
                        results.setdefault(f"{phase}: {name}", []).append((seconds, code))
        finally:
            for pid in pids.values():
                os.kill(pid, signal.SIGCONT)

    print(f"probe timeout T = {args.timeout:g} s; {args.runs} runs of each, interleaved")
    medians = {}
    for key, runs in results.items():
        walls = [w for w, _ in runs]
        codes = sorted({c for _, c in runs})
        medians[key] = statistics.median(walls)
        print(f"  {key:<32} median {medians[key]:6.3f} s   min {min(walls):6.3f}   max {max(walls):6.3f}   "
              f"exit {','.join(map(str, codes))}")
    healthy, holed = medians["healthy: kitty-ops health"], medians["black-holed: kitty-ops health"]
    print(f"healthy stack: kitty-ops {healthy:.3f} s (target <= 0.5 s: {verdict(healthy, 0.5)}); "
          f"manual loop {medians['healthy: manual curl loop']:.3f} s; of kitty-ops's time, "
          f"{medians['healthy: floor']:.3f} s is the bare interpreter")
    print(f"one black-holed: kitty-ops {holed:.3f} s (target <= T + 0.5 = {args.timeout + 0.5:g} s: "
          f"{verdict(holed, args.timeout + 0.5)}); manual loop {medians['black-holed: manual curl loop']:.3f} s")
    three = medians["3 black-holed: kitty-ops health"]
    print(f"three black-holed: kitty-ops {three:.3f} s (target <= {args.timeout + 0.5:g} s: "
          f"{verdict(three, args.timeout + 0.5)}); manual loop {medians['3 black-holed: manual curl loop']:.3f} s")
    print(f"manual loop / kitty-ops: healthy {medians['healthy: manual curl loop'] / healthy:4.2f}x, "
          f"one black-holed {medians['black-holed: manual curl loop'] / holed:4.2f}x, "
          f"three black-holed {medians['3 black-holed: manual curl loop'] / three:4.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
