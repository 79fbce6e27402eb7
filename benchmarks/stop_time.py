#!/usr/bin/env python3
"""Stop time: four servers that each take G seconds to exit after SIGTERM.

  kitty-ops      four fakes with --fake-exit-delay G started by `python -m kitty_ops start` in a
                 temporary project; the figure is the wall clock of `python -m kitty_ops stop
                 --json` (a subprocess, interpreter start included). kitty-ops signals all servers
                 at once and waits up to KITTY_STOP_GRACE (set to G + 3 s here) for each.
  seed baseline  the seed manual's stop, reimplemented: for each server one after another,
                 SIGTERM, sleep 1 s, SIGKILL if still alive; against four fakes with the same G
                 spawned directly (own sessions). With G > 1 it "finishes" in ~4 s only because
                 it SIGKILLs every server mid-shutdown; the count of SIGKILLed servers is printed.

Target: kitty-ops <= G + 0.5 s. Timing never fails the run (exit 0); PASS/MISS is information.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tests.harness import alive  # noqa: E402

SERVERS = ("q4", "f16", "summary", "vision")
SEED_PAUSE = 1.0


def kitty_run(delay: float) -> tuple[float, int, int]:
    """Start four slow-exit fakes with kitty-ops, time `stop`. Returns (s, clean, killed)."""
    with common.temp_project("stop") as project:
        project.fake_env({name: f"--fake-load-seconds 0.1 --fake-exit-delay {delay:g}" for name in SERVERS},
                         KITTY_STOP_GRACE=f"{delay + 3:g}")
        started = project.run("start", timeout=60)
        if started.returncode != 0:
            raise RuntimeError(f"start exited {started.returncode}: {started.stdout}{started.stderr}")
        pids = project.recorded_pids()
        seconds, done = common.timed_run(project, "stop", "--json", timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"stop exited {done.returncode}: {done.stdout}{done.stderr}")
        outcomes = json.loads(done.stdout)["components"]
        clean = sum(1 for o in outcomes if o["action"] == "stopped" and o["detail"] == "stopped")
        killed = sum(1 for o in outcomes if "killed" in o["detail"])
        survivors = [pid for pid in pids if alive(pid)]
        if survivors:
            raise RuntimeError(f"processes still alive after stop: {survivors}")
        return seconds, clean, killed


def seed_run(delay: float) -> tuple[float, int, int]:
    """The seed's sequential stop against four directly spawned fakes. Returns (s, clean, killed)."""
    with common.Fakes() as fakes:
        ports = [common.free_port() for _ in SERVERS]
        popens = [fakes.spawn(port, "--fake-load-seconds", "0.1", "--fake-exit-delay", f"{delay:g}")
                  for port in ports]
        common.wait_healthy(ports)
        clean = killed = 0
        began = time.perf_counter()
        for popen in popens:  # `kill $pid; sleep 1; kill -0 $pid && kill -9 $pid`, one by one
            os.kill(popen.pid, signal.SIGTERM)
            time.sleep(SEED_PAUSE)
            if popen.poll() is None:
                os.kill(popen.pid, signal.SIGKILL)
                killed += 1
            else:
                clean += 1
        seconds = time.perf_counter() - began
        for popen in popens:
            popen.wait(timeout=5)
        return seconds, clean, killed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="stops measured for each side (default 5; ~7 s each pair)")
    parser.add_argument("--delay", type=float, default=2.0, help="G: each fake's exit delay after SIGTERM (default 2)")
    args = parser.parse_args(argv)
    target = args.delay + 0.5

    common.header(f"stop_time: {len(SERVERS)} servers, each exits {args.delay:g} s after SIGTERM")
    began = time.monotonic()
    kitty = [kitty_run(args.delay) for _ in range(args.runs)]
    k_times = [k[0] for k in kitty]
    print(f"{'kitty-ops stop (CLI wall clock)':<36}{common.summary_s(k_times)}   "
          f"clean {sum(k[1] for k in kitty)}/{len(SERVERS) * args.runs}, "
          f"SIGKILLed {sum(k[2] for k in kitty)}", flush=True)
    seed = [seed_run(args.delay) for _ in range(args.runs)]
    s_times = [s[0] for s in seed]
    print(f"{'seed sequential TERM/1 s/KILL':<36}{common.summary_s(s_times)}   "
          f"clean {sum(s[1] for s in seed)}/{len(SERVERS) * args.runs}, "
          f"SIGKILLed {sum(s[2] for s in seed)}", flush=True)

    k50, s50 = common.percentile(k_times, 50), common.percentile(s_times, 50)
    print("-" * 78)
    print(f"target: kitty-ops <= G + 0.5 = {target:g} s -> median {k50:.3f} s, max {max(k_times):.3f} s: "
          f"{common.verdict(max(k_times), target)} (judged on the max)")
    print(f"baseline: seed median {s50:.3f} s vs kitty-ops median {k50:.3f} s -> ratio {s50 / k50:.2f}x "
          f"(seed / kitty-ops)")
    seed_killed = sum(s[2] for s in seed)
    if seed_killed:
        print(f"note: the seed only 'finished' by SIGKILLing {seed_killed} of {len(SERVERS) * args.runs} servers "
              f"mid-shutdown; stopping all cleanly one by one would take >= {len(SERVERS)} x {args.delay:g} = "
              f"{len(SERVERS) * args.delay:g} s.")
    print(f"elapsed {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
