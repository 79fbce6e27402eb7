#!/usr/bin/env python3
"""Stop with answers in flight: two real llama-servers (the demo model), each writing one answer
(q4 TOKENS tokens, summary 1.5 x TOKENS) when the stop begins.

  kitty-ops (drain)        `kitty-ops stop --json`: each server finishes its answer, then SIGTERM
  baseline (no drain)      `kitty-ops stop --no-drain --json`: SIGTERM at once, as every stop did
                           before draining; llama-server neither exits nor answers, so the grace
                           (KITTY_STOP_GRACE, 10 s) runs out and SIGKILL cuts the answers

The two are run interleaved in the same run, on the same servers and model. Printed: wall time
of the stop (a subprocess, interpreter start included), answers delivered whole, and the time
from the longest answer's end to the end of the stop.

Target: every answer delivered, and the stop ends within the longest answer + 0.5 s. Timing
never fails the run (exit 0); PASS/MISS is information.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tests.harness import alive, answering, real_env  # noqa: E402

TARGET_AFTER_ANSWER = 0.5


def one_stop(drain: bool, tokens: int) -> tuple[float, int, float]:
    """Start q4 and summary, put one answer in flight on each, stop. Returns (stop wall s,
    answers delivered whole, seconds from the last answer's end to the stop's end)."""
    with common.temp_project("drain") as project:
        ports = real_env(project, {"q4": {}, "summary": {}}, KITTY_STOP_GRACE=10)
        if not common.started(project):
            raise RuntimeError("the real servers did not start")
        pids = project.recorded_pids()
        answers = [answering(ports["q4"], tokens), answering(ports["summary"], tokens * 3 // 2)]
        began = time.monotonic()
        seconds, done = common.timed_run(project, "stop", "--json", *([] if drain else ["--no-drain"]),
                                         timeout=180)
        ended = began + seconds
        if done.returncode != 0:
            raise RuntimeError(f"stop exited {done.returncode}: {done.stdout}{done.stderr}")
        for answer in answers:
            answer.join(60)
        whole = sum(1 for a, n in zip(answers, (tokens, tokens * 3 // 2))
                    if a.status == 200 and a.answer.get("tokens_predicted") == n)
        survivors = [pid for pid in pids if alive(pid)]
        if survivors:
            raise RuntimeError(f"processes still alive after stop: {survivors}")
        last_answer = max((a.ended for a in answers if a.status == 200), default=began)
        return seconds, whole, ended - last_answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=60, help="q4's answer length (summary's is 1.5x)")
    args = parser.parse_args(argv)
    common.header(f"Stop with answers in flight: 2 real servers, {args.runs} interleaved runs")
    results: dict[str, list[tuple[float, int, float]]] = {"drain": [], "no-drain": []}
    for _ in range(args.runs):
        results["drain"].append(one_stop(True, args.tokens))
        results["no-drain"].append(one_stop(False, args.tokens))
    for name, label in (("drain", "kitty-ops stop (drain)"), ("no-drain", "baseline: stop --no-drain")):
        walls = [r[0] for r in results[name]]
        delivered = sum(r[1] for r in results[name])
        print(f"  {label:28} wall {common.summary_s(walls)}; answers delivered {delivered}/{2 * args.runs}")
    after = [r[2] for r in results["drain"]]
    ratio = statistics.median(r[0] for r in results["no-drain"]) / statistics.median(r[0] for r in results["drain"])
    print(f"  drain: stop ended {statistics.median(after):.2f} s (median; max {max(after):.2f} s) after the "
          f"longest answer; target <= {TARGET_AFTER_ANSWER} s: {common.verdict(max(after), TARGET_AFTER_ANSWER)}")
    print(f"  baseline / drain wall: {ratio:.1f}x")
    print(json.dumps({"drain": results["drain"], "no_drain": results["no-drain"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
