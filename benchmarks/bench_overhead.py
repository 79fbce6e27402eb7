#!/usr/bin/env python3
"""The bench's own cost, and how close the server comes to the engine: one real llama-server
(the demo model, one slot, THREADS threads), measured with `kitty-ops bench --yardstick` in the
same run as llama.cpp's `llama-bench` on the same model file and threads.

  kitty-ops bench    single-stream generation tokens/s through the server's HTTP API (streamed
                     /completion), time to first token; and the client's own CPU time over the
                     level's wall time (its threads, the stream parsing, the memory sampler)
  llama-bench        the engine alone (`-p P -n N -r 2`): pp and tg tokens/s

Printed: both figures, the ratio (server / llama-bench tg) and the bench's CPU share. Targets
(information, never a failure): the server at >= 0.85x llama-bench's tg, the bench's client at
< 10% of one core. On 2 cores the client and llama-bench compete with the server for the CPU:
read the ratio as a floor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from tests.harness import real_env  # noqa: E402

TARGET_RATIO = 0.85
TARGET_CPU_SHARE = 0.10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    common.header("kitty-ops bench: its own overhead, and the server against llama-bench")
    with common.temp_project("bench-overhead") as project:
        real_env(project, {"q4": {"THREADS": args.threads, "PARALLEL": 1}}, LLAMACPP_CTX=2048)
        if not common.started(project):
            return 1
        seconds, done = common.timed_run(
            project, "bench", "q4", "--concurrency", "1", "--requests", str(args.requests), "--prompt-tokens",
            str(args.prompt_tokens), "--max-tokens", str(args.max_tokens), "--yardstick", "--no-compare", "--json",
            timeout=600)
        if done.returncode != 0:
            print(f"bench exited {done.returncode}: {done.stdout[-2000:]}{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        record = json.loads(done.stdout)["roles"][0]["record"]
    level, stick = record["levels"][0], record["yardstick"]
    share = level["client_cpu_s"] / level["wall"]
    print(f"model {record['model']['file']}, engine {record['engine']['version']}, {args.threads} threads, "
          f"prompt ~{args.prompt_tokens} tokens ({level['prompt_tokens']} counted), {args.max_tokens} out, "
          f"{args.requests} requests")
    print(f"kitty-ops bench   gen {level['gen_tps_p50']:8.2f} tok/s (server's own {level['server_gen_tps_p50']:.2f})"
          f"   TTFT p50 {level['ttft_p50'] * 1000:6.1f} ms   prompt {level['prompt_tps_p50']:8.2f} tok/s")
    print(f"llama-bench       tg{stick['n_gen']} {stick['tg_tps']:8.2f} tok/s (+-{stick['tg_stddev']:.2f})   "
          f"pp{stick['n_prompt']} {stick['pp_tps']:8.2f} tok/s   build {stick['build']}")
    print(f"ratio             {stick['ratio']:.3f}x llama-bench's tg   target >= {TARGET_RATIO}   "
          f"{'PASS' if stick['ratio'] >= TARGET_RATIO else 'MISS'}")
    print(f"bench client CPU  {level['client_cpu_s']:.3f} s over {level['wall']:.2f} s wall = {share:.1%} of a core"
          f"   target < {TARGET_CPU_SHARE:.0%}   {'PASS' if share < TARGET_CPU_SHARE else 'MISS'}")
    print(f"whole command     {seconds:.1f} s (start of the interpreter to exit, yardstick included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
