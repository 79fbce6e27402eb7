#!/usr/bin/env python3
"""Status and health time: wall clock of `kitty-ops status --json` and `kitty-ops health`
with two servers up, against the floors no Python CLI can beat, in the same run.

Two fakes are started by `python -m kitty_ops start` in a temporary project; then, interleaved
round by round so background noise hits every variant alike, each is timed as a subprocess:

  kitty-ops status      `python -m kitty_ops status --json` (interpreter, imports, config, two
                        identity checks and two concurrent /health probes, the disabled tiers'
                        rows, JSON out); its own "seconds" (the look itself, without the
                        interpreter and imports) is reported beside it
  kitty-ops health      `python -m kitty_ops health` (the same look, judged, under the health lock)
  floor                 `python -c pass`: the interpreter doing nothing
  dependency floor      `python -c "import click, psutil, dotenv, http.client"`: the interpreter
                        and the libraries any status of these servers needs (arguments, process
                        identity, the env file, HTTP); what is above it is kitty-ops's own
  import only           `python -c "import kitty_ops.cli"`: what every command pays first
  2 x curl (baseline)   `curl -s .../health` for each server, one after another; without curl,
                        one fresh interpreter doing two sequential http.client requests

With --before REV, status and health as of git revision REV run as two more variants in the
same rounds (a temporary worktree): the before/after of a change, measured together.

Target (issue 17): median <= 100 ms for status and for health. Timing never fails the run
(exit 0); PASS/MISS is information. Bytecode is compiled first (as `make setup` does), so no
variant pays for compiling kitty-ops's sources.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SERVERS = ("q4", "f16")
TARGET = 0.100
DEPENDENCIES = "import click, psutil, dotenv, http.client"


def timed(argv: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, **kwargs)
    return time.perf_counter() - started, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="rounds of every variant (default 20)")
    parser.add_argument("--before", metavar="REV", help="also run status and health as of this git revision")
    args = parser.parse_args(argv)

    common.header(f"status_time: `kitty-ops status` and `kitty-ops health` with {len(SERVERS)} servers up")
    began = time.monotonic()
    py = sys.executable
    subprocess.run([py, "-m", "compileall", "-q", str(common.REPO / "kitty_ops")], capture_output=True)
    curl = shutil.which("curl")
    keys = ("status", "health", "floor", "dependencies", "import", "baseline") + \
        (("status_before", "health_before") if args.before else ())
    results: dict[str, list[float]] = {key: [] for key in keys}
    looks: list[float] = []  # status's own "seconds": the observation, in process
    baseline_name = f"{len(SERVERS)} x curl -s /health (sequential)" if curl else \
        f"{len(SERVERS)} x http.client, fresh interpreter"
    with common.temp_project("status") as project, common.kitty_ops_at(args.before) as before_env:
        ports = project.fake_env({name: "--fake-load-seconds 0.1" for name in SERVERS})
        started = project.run("start", timeout=60)
        if started.returncode != 0:
            raise RuntimeError(f"start exited {started.returncode}: {started.stdout}{started.stderr}")
        urls = [f"http://{common.HOST}:{ports[name]}/health" for name in SERVERS]
        client = ("import http.client\n"
                  f"for port in {[ports[n] for n in SERVERS]!r}:\n"
                  f"    c = http.client.HTTPConnection({common.HOST!r}, port, timeout=2)\n"
                  "    c.request('GET', '/health'); c.getresponse().read(); c.close()\n")

        def variant(key: str) -> float:
            if key == "status_before":  # the JSON of older revisions differs: only the exit code is checked
                seconds, done = common.timed_run(project, "status", "--json", timeout=60, extra_env=before_env)
                if done.returncode != 0:
                    raise RuntimeError(f"status as of {args.before} exited {done.returncode}: {done.stderr}")
                return seconds
            if key == "health_before":
                seconds, done = common.timed_run(project, "health", timeout=60, extra_env=before_env)
                if done.returncode != 0:
                    raise RuntimeError(f"health as of {args.before} exited {done.returncode}: {done.stdout}")
                return seconds
            if key == "status":
                seconds, done = common.timed_run(project, "status", "--json", timeout=60)
                if done.returncode != 0:
                    raise RuntimeError(f"status exited {done.returncode}: {done.stderr}")
                found = json.loads(done.stdout)
                states = [c["health"] for c in found["components"] if c["tier"] == "llama"]
                if states != ["healthy"] * len(SERVERS):
                    raise RuntimeError(f"expected {len(SERVERS)} healthy servers, got {states}")
                looks.append(found["seconds"])
                return seconds
            if key == "health":
                seconds, done = common.timed_run(project, "health", timeout=60)
                if done.returncode != 0:
                    raise RuntimeError(f"health exited {done.returncode}: {done.stdout}")
                return seconds
            if key == "floor":
                return timed([py, "-c", "pass"])[0]
            if key == "dependencies":
                return timed([py, "-c", DEPENDENCIES])[0]
            if key == "import":
                return timed([py, "-c", "import kitty_ops.cli"], cwd=project.root)[0]
            if not curl:
                return timed([py, "-c", client])[0]
            t0 = time.perf_counter()
            for url in urls:
                done = subprocess.run([curl, "-s", url], capture_output=True, stdin=subprocess.DEVNULL, timeout=10)
                if done.returncode != 0:
                    raise RuntimeError(f"curl {url} exited {done.returncode}")
            return time.perf_counter() - t0

        for key in keys:  # warm-up (page cache), not counted
            variant(key)
        looks.clear()
        for round_ in range(args.runs):
            for key in (keys if round_ % 2 == 0 else keys[::-1]):
                results[key].append(variant(key))

    labels = {"status": "kitty-ops status --json", "health": "kitty-ops health",
              "floor": "floor: python -c pass", "dependencies": "dependency floor (click psutil dotenv http)",
              "import": "python -c 'import kitty_ops.cli'", "baseline": baseline_name,
              "status_before": f"status --json as of {args.before}", "health_before": f"health as of {args.before}"}
    for key, label in labels.items():
        if not results.get(key):
            continue
        print(f"{label:<44}{common.summary_ms(results[key])}")
        if key == "status":
            print(f"{'  of which the look itself':<44}{common.summary_ms(looks)}")
    med = {key: common.percentile(values, 50) for key, values in results.items() if values}
    print("-" * 78)
    for key in ("status", "health"):
        print(f"{key}: median {med[key] * 1000:.1f} ms, target <= {TARGET * 1000:.0f} ms: "
              f"{common.verdict(med[key], TARGET)}; above the dependency floor "
              f"{(med[key] - med['dependencies']) * 1000:.1f} ms (kitty-ops's own imports and work)")
        if args.before:
            print(f"  as of {args.before}: median {med[key + '_before'] * 1000:.1f} ms; above the dependency "
                  f"floor {(med[key + '_before'] - med['dependencies']) * 1000:.1f} ms")
    print(f"the dependency floor alone: {med['dependencies'] * 1000:.1f} ms "
          f"({(med['dependencies'] - med['floor']) * 1000:.1f} ms above python -c pass)")
    print(f"ratio of status to the baseline ({baseline_name}): {med['status'] / med['baseline']:.2f}x "
          f"(the baseline only sees HTTP codes: no PIDs, identity, uptime, memory)")
    print(f"elapsed {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
