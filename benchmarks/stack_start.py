#!/usr/bin/env python3
"""Whole-stack start: `kitty-ops start` against the critical-path ideal and the seed manual.

The stack: four fake llama servers that load in 2, 6, 3 and 4 s (q4, f16, summary, vision), and
the real compose tier on the local Docker engine (postgres, redis, mosquitto, rustfs, brain; the
test image from ops/dev/test-docker-engine.sh) with start-up delays added by an override
(postgres 2 s, redis 1 s, mosquitto 1 s, brain 1 s before they listen). brain depends on
postgres, redis and mosquitto and, through its kitty-ops.needs label, on every llama server.

Measured in the same run, each repeated --runs times on fresh volumes:
- inherent ready time of every component alone: a fake server from spawn to /health 200; a
  created container from `docker start` to healthy (docker inspect polled every 20 ms);
- the ideal: the longest chain of those inherent times through the dependency graph;
- kitty-ops: `python -m kitty_ops start` wall time, interpreter start and Docker preflight
  included (then a stop);
- the seed manual's procedure, reimplemented: start the servers, wait on each /health in turn
  with 2 s sleeps, then `docker compose up -d`, then wait for brain's /health with 2 s sleeps.
Target: kitty-ops within 5% of the ideal (issue 17). Timing never fails the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Fakes, docker_test_image, header, health_status, verdict, write_tiny_gguf

from kitty_ops.containers.compose import parse_model, parse_ps_ids
from kitty_ops.stack import graph as graphs
from tests.harness import COMPOSE_BASE, COMPOSE_TEST, StackProject, free_port

LOADS = {"q4": 2.0, "f16": 6.0, "summary": 3.0, "vision": 4.0}
DELAYS = {"postgres": 2, "redis": 1, "mosquitto": 1, "brain": 1}
ENTRYPOINTS = {"postgres": "postgres-entrypoint", "mosquitto": "mosquitto-entrypoint", "brain": "stand-in-http"}
SERVICES = ("postgres", "redis", "mosquitto", "rustfs", "brain")


def delay_override() -> str:
    lines = ["services:"]
    for service, seconds in DELAYS.items():
        if service == "redis":
            start = ("redis-server --appendonly yes --dir /data --bind 0.0.0.0 --protected-mode no")
        else:
            start = ENTRYPOINTS[service]
        lines += [f"  {service}:", f"    entrypoint: [\"sh\", \"-c\", \"sleep {seconds}; exec {start}\"]"]
        if service == "redis":
            lines.append("    command: []")
    return "\n".join(lines) + "\n"


class Bench:
    def __init__(self, root: Path, image: str):
        self.project = StackProject(root, image)
        self.project.add_override(delay_override())
        flags = {name: f"--fake-load-seconds {seconds:g}" for name, seconds in LOADS.items()}
        self.ports = self.project.stack_env(flags, KITTY_COMPOSE_TIMEOUT=120, LLAMACPP_HEALTH_TIMEOUT=120,
                                            KITTY_STOP_GRACE=2)

    def compose(self, *args: str, project: str | None = None) -> subprocess.CompletedProcess:
        files = [a for f in [COMPOSE_BASE, COMPOSE_TEST, *self.project.overrides] for a in ("-f", str(f))]
        env = {**os.environ, "KITTY_ENV_FILE": str(self.project.env_file)}
        return subprocess.run(["docker", "compose", "-p", project or self.project.compose_project,
                               "--env-file", str(self.project.env_file), *files, "--profile", "rustfs", "--profile", "brain", *args],
                              capture_output=True, text=True, timeout=300, env=env)

    def reset(self, project: str | None = None) -> None:
        """Fresh volumes for every measurement; then a pause so the engine has finished
        removing the old ones before the next clock starts."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "1", project=project)
        time.sleep(2)

    def container_ready(self, service: str, project: str | None = None) -> bool:
        name = f"{project or self.project.compose_project}-{service}-1"
        done = subprocess.run(["docker", "inspect", "--format", "{{.State.Health.Status}}", name],
                              capture_output=True, text=True)
        return done.stdout.strip() == "healthy"

    # --- inherent times

    def inherent(self) -> dict[str, float]:
        times: dict[str, float] = {}
        with Fakes() as fakes:
            began = {}
            for name, seconds in LOADS.items():
                port = free_port()
                began[name] = (time.perf_counter(), port)
                fakes.spawn(port, "--fake-load-seconds", f"{seconds:g}")
            pending = dict(began)
            while pending:
                for name, (start, port) in list(pending.items()):
                    if health_status(port) == 200:
                        times[f"llama:{name}"] = time.perf_counter() - start
                        del pending[name]
                time.sleep(0.01)
        self.reset()
        self.compose("up", "--no-start")
        ids = parse_ps_ids(self.compose("ps", "--all", "--format", "json").stdout)
        for service in SERVICES:
            start = time.perf_counter()  # the cheapest way to ask: start the created container
            done = subprocess.run(["docker", "start", ids[service]], capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(done.stderr)
            while not self.container_ready(service):
                if time.perf_counter() - start > 120:
                    raise RuntimeError(f"{service} never turned healthy")
                time.sleep(0.02)
            times[f"compose:{service}"] = time.perf_counter() - start
            self.compose("rm", "--stop", "--force", service)  # each alone, on an idle engine
        self.reset()
        return times

    def ideal(self, inherent: dict[str, float]) -> tuple[float, list[str]]:
        model = parse_model(json.loads(self.compose("config", "--format", "json").stdout))
        plan, _ = graphs.build(list(LOADS), [], model)
        return graphs.critical_path(plan, inherent)

    # --- the two ways of starting

    def kitty_ops(self) -> tuple[float, float, float]:
        """Wall time of `start`, and from its progress lines: when the plan was made (interpreter,
        validation and Docker preflight done) and when the last component turned ready."""
        self.reset()
        start = time.perf_counter()
        done = self.project.run("start", timeout=300)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"kitty-ops start exited {done.returncode}: {done.stderr[-3000:]}")
        stamps = [(float(m.group(1)), m.group(2)) for m in
                  re.finditer(r"^\[\s*([\d.]+)s\] (\S+)\s+.*(?:healthy|ready) after", done.stderr, re.M)]
        planned = re.search(r"^\[\s*([\d.]+)s\] plan", done.stderr, re.M)
        stopped = self.project.run("stop", timeout=300)
        if stopped.returncode != 0:
            raise RuntimeError(f"kitty-ops stop exited {stopped.returncode}: {stopped.stderr[-2000:]}")
        return wall, float(planned.group(1)), max(t for t, _ in stamps)

    def seed_manual(self) -> float:
        project = self.project.compose_project + "seed"
        self.reset(project)
        with Fakes() as fakes:
            start = time.perf_counter()
            for name, seconds in LOADS.items():
                fakes.spawn(self.ports_of(name), "--fake-load-seconds", f"{seconds:g}")
            for name in LOADS:  # `until curl -sf .../health; do sleep 2; done`, one server after another
                while health_status(self.ports_of(name)) != 200:
                    time.sleep(2)
            up = self.compose("up", "-d", project=project)
            if up.returncode != 0:
                raise RuntimeError(up.stderr)
            brain = self.port_var("BRAIN_PORT")
            while health_status(brain) != 200:
                time.sleep(2)
            wall = time.perf_counter() - start
        self.reset(project)
        return wall

    def ports_of(self, name: str) -> int:
        return self.ports[name]

    def port_var(self, var: str) -> int:
        return self.ports[var]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    header("whole-stack start: kitty-ops vs the critical path and the seed manual")
    image = docker_test_image()
    if image is None:
        return 1
    with tempfile.TemporaryDirectory(prefix="kitty-bench-stack-") as tmp:
        write_tiny_gguf(Path(tmp) / "models" / "tiny.gguf")
        bench = Bench(Path(tmp), image)
        try:
            inherent_runs = [bench.inherent() for _ in range(args.runs)]
            inherent = {k: statistics.median(r[k] for r in inherent_runs) for k in inherent_runs[0]}
            ideal, chain = bench.ideal(inherent)
            kitty = [bench.kitty_ops() for _ in range(args.runs)]
            seed = [bench.seed_manual() for _ in range(args.runs)]
        finally:
            bench.project.run("stop", "--grace", "1", timeout=120)
            bench.reset()
            bench.reset(bench.project.compose_project + "seed")
    print("inherent ready times (median of each alone):")
    for key in sorted(inherent, key=inherent.get):
        print(f"  {key:<18} {inherent[key]:6.2f} s")
    print(f"ideal (critical path {' -> '.join(chain)}): {ideal:6.2f} s")
    walls = [w for w, _, _ in kitty]
    kitty_median, seed_median = statistics.median(walls), statistics.median(seed)
    print(f"kitty-ops start     runs {', '.join(f'{t:.2f}' for t in walls)} s   median {kitty_median:6.2f} s")
    print(f"  of which: plan made at {statistics.median(p for _, p, _ in kitty):.2f} s (interpreter, "
          f"validate, Docker preflight); last component ready at "
          f"{statistics.median(r for _, _, r in kitty):.2f} s (progress clock); the rest: checks, "
          f"end-to-end query, exit")
    print(f"seed manual script  runs {', '.join(f'{t:.2f}' for t in seed)} s   median {seed_median:6.2f} s")
    ratio = kitty_median / ideal
    print(f"kitty-ops / ideal       = {ratio:5.3f}  (target <= 1.05: {verdict(ratio, 1.05)})")
    print(f"seed manual / kitty-ops = {seed_median / kitty_median:5.2f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
