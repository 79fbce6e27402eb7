#!/usr/bin/env python3
"""Status time: wall clock of `python -m kitty_ops status --json` with four servers up.

Four fakes are started by `python -m kitty_ops start` in a temporary project; then, interleaved
round by round so background noise hits every variant alike, each is timed as a subprocess:

  kitty-ops status      `python -m kitty_ops status --json` (interpreter start, imports, config,
                        four identity checks and four concurrent /health probes, the disabled
                        tiers' rows, JSON out); its own "seconds" (the look itself, without the
                        interpreter and imports) is reported beside it
  floor                 `python -c pass`: the same interpreter doing nothing; no Python CLI can
                        beat it
  import only           `python -c "import kitty_ops.cli"`: the floor plus kitty-ops's imports
  4 x curl (baseline)   the seed manual's check: `curl -s .../health` for each server, one after
                        another (four processes); without curl, one fresh interpreter doing four
                        sequential http.client requests

Target: median <= 300 ms. Timing never fails the run (exit 0); PASS/MISS is information.
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

SERVERS = ("q4", "f16", "summary", "vision")
TARGET = 0.300


def timed(argv: list[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, **kwargs)
    return time.perf_counter() - started, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="rounds of every variant (default 20)")
    args = parser.parse_args(argv)

    common.header(f"status_time: `kitty-ops status --json` with {len(SERVERS)} servers up")
    began = time.monotonic()
    curl = shutil.which("curl")
    results: dict[str, list[float]] = {"status": [], "floor": [], "import": [], "baseline": []}
    looks: list[float] = []  # status's own "seconds": the observation, in process
    baseline_name = "4 x curl -s /health (sequential)" if curl else "4 x http.client, fresh interpreter"
    with common.temp_project("status") as project:
        ports = project.fake_env({name: "--fake-load-seconds 0.1" for name in SERVERS})
        started = project.run("start", timeout=60)
        if started.returncode != 0:
            raise RuntimeError(f"start exited {started.returncode}: {started.stdout}{started.stderr}")
        urls = [f"http://{common.HOST}:{ports[name]}/health" for name in SERVERS]
        py = sys.executable
        client = ("import http.client\n"
                  f"for port in {[ports[n] for n in SERVERS]!r}:\n"
                  f"    c = http.client.HTTPConnection({common.HOST!r}, port, timeout=2)\n"
                  "    c.request('GET', '/health'); c.getresponse().read(); c.close()\n")

        # Warm-up (page cache, .pyc files), not counted.
        project.run("status", "--json")
        subprocess.run([py, "-c", "import kitty_ops.cli"], capture_output=True)

        for round_ in range(args.runs):
            seconds, done = common.timed_run(project, "status", "--json", timeout=60)
            if done.returncode != 0:
                raise RuntimeError(f"status exited {done.returncode}: {done.stderr}")
            if round_ == 0:
                states = [c["health"] for c in json.loads(done.stdout)["components"] if c["tier"] == "llama"]
                if states != ["healthy"] * len(SERVERS):
                    raise RuntimeError(f"expected {len(SERVERS)} healthy servers, got {states}")
            results["status"].append(seconds)
            looks.append(json.loads(done.stdout)["seconds"])
            results["floor"].append(timed([py, "-c", "pass"])[0])
            results["import"].append(timed([py, "-c", "import kitty_ops.cli"], cwd=project.root)[0])
            if curl:
                t0 = time.perf_counter()
                for url in urls:
                    done = subprocess.run([curl, "-s", url], capture_output=True, stdin=subprocess.DEVNULL, timeout=10)
                    if done.returncode != 0:
                        raise RuntimeError(f"curl {url} exited {done.returncode}")
                results["baseline"].append(time.perf_counter() - t0)
            else:
                results["baseline"].append(timed([py, "-c", client])[0])

    labels = {"status": "kitty-ops status --json",
              "floor": "floor: python -c pass",
              "import": "python -c 'import kitty_ops.cli'",
              "baseline": baseline_name}
    for key, label in labels.items():
        print(f"{label:<36}{common.summary_ms(results[key])}")
    print(f"{'  of which the look itself':<36}{common.summary_ms(looks)}")
    med = {key: common.percentile(values, 50) for key, values in results.items()}
    p95 = common.percentile(results["status"], 95)
    print("-" * 78)
    print(f"target: median <= {TARGET * 1000:.0f} ms -> median {med['status'] * 1000:.1f} ms: "
          f"{common.verdict(med['status'], TARGET)}   (p95 {p95 * 1000:.1f} ms: {common.verdict(p95, TARGET)})")
    print(f"ratio to the floor (python -c pass): {med['status'] / med['floor']:.2f}x; "
          f"above the floor: {(med['status'] - med['floor']) * 1000:.1f} ms, of which imports "
          f"{(med['import'] - med['floor']) * 1000:.1f} ms")
    print(f"ratio to the baseline ({baseline_name}): {med['status'] / med['baseline']:.2f}x "
          f"(kitty-ops / baseline; the baseline only sees HTTP codes: no PIDs, identity, uptime, memory)")
    print(f"elapsed {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
