"""What a started server really runs on, and what its settings demand of it (issue 18 §2).

With the real llama-server on this GPU-less machine: LLAMACPP_REQUIRE_GPU=true fails the start
(the server named, "runs on the CPU", the engine's own log lines, the runbook) and leaves no
process and no record; without it the same server starts and `status` shows it on the CPU, with
its /metrics checked when it has --metrics and named when it has not.

With the fake server printing a load log written from llama.cpp's source (--fake-log, the
fixtures of tests/fixtures/llama_logs): a partial CUDA offload fails REQUIRE_GPU, full Metal and
CUDA offloads pass and read `metal 81/81` / `cuda 81/81`; and a server started with --metrics
whose /metrics answers 404 fails the start.
"""

from __future__ import annotations

import json
import re

import psutil
import pytest

from kitty_ops.exitcodes import Exit
from kitty_ops.host import ports, probes
from tests.harness import REPO, alive, real_env, wait_until

LOGS = REPO / "tests" / "fixtures" / "llama_logs"
KEY = "kitty-test-key-offload-5d1e"


def started_pids(output: str) -> list[int]:
    """The PIDs start's progress lines report (`q4: started pid 1234 on ...`)."""
    return [int(pid) for pid in re.findall(r"started pid (\d+)", output)]


def listeners_on(port: int) -> list[int]:
    """Processes whose command line asks for `port`: a server left behind would be one."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "--port" in cmdline and str(port) in cmdline and alive(proc.info["pid"]):
            found.append(proc.info["pid"])
    return found


def assert_nothing_left(project, port: int, pids: list[int]) -> None:
    assert pids, "start never reported the pid it started"
    assert wait_until(lambda: not any(alive(pid) for pid in pids), 10), pids
    assert ports.is_free("127.0.0.1", port)
    assert listeners_on(port) == []
    assert not list(project.logs.glob("llamacpp-*.json")) and not list(project.logs.glob("llamacpp-*.pid"))


def llama_rows(project) -> dict[str, dict]:
    code, data = project.json("status", timeout=60)
    assert code == 0, data
    return {c["name"]: c for c in data["components"] if c["tier"] == "llama"}


# ------------------------------------------------------------------- the real engine, CPU only

@pytest.mark.real_engine
def test_require_gpu_fails_the_start_of_a_real_server_on_the_cpu_and_leaves_nothing(project):
    port = real_env(project, {"q4": {}}, LLAMACPP_REQUIRE_GPU="true")["q4"]
    done = project.run("start", timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == Exit.FAILED, out
    failure = done.stderr[done.stderr.index("\nq4 failed: "):]
    assert "REQUIRE_GPU" in failure and "it runs on the CPU" in failure, failure
    assert "last lines of its log:" in failure
    assert re.search(r"load_tensors: +CPU(_Mapped)? model buffer size", failure), failure
    assert "runbook: ops/runbooks/cpu-fallback.md" in failure
    assert_nothing_left(project, port, started_pids(out))


@pytest.mark.real_engine
def test_a_real_server_on_the_cpu_starts_without_it_and_status_says_cpu_and_metrics(project):
    # q4 with --metrics (LLAMACPP_METRICS defaults to true) and an API key, which llama-server
    # demands on /metrics: start's check of /metrics sends it.
    port_of = real_env(project, {"q4": {"API_KEY": KEY}, "summary": {"METRICS": "false"}})
    done = project.run("start", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert project.record("q4")["offload"]["backend"] == "cpu"
    metrics = f"http://127.0.0.1:{port_of['q4']}/metrics"
    assert probes.http_request(metrics)[0] == 401  # so start's 200 came with the key
    assert probes.http_request(metrics, headers={"Authorization": f"Bearer {KEY}"})[0] == 200

    rows = llama_rows(project)
    q4, summary = rows["q4"], rows["summary"]
    assert q4["state"] == "running" and q4["offload"]["backend"] == "cpu", q4
    assert (q4["offload"]["layers"], q4["offload"]["devices"]) == (0, ["CPU"])
    assert q4["metrics"] is True and "no /metrics" not in q4["detail"]
    assert summary["metrics"] is False and summary["detail"] == "no /metrics (start with --metrics)"
    text = project.run("status", timeout=60).stdout.splitlines()
    header = text[0]
    q4_line = next(line for line in text if line.split()[:2] == ["llama", "q4"])
    assert q4_line[header.index("OFFLOAD"):].split()[0] == "cpu"
    assert project.run("stop", timeout=120).returncode == 0


# -------------------------------------------------------- recorded GPU logs, through the fake

def test_a_partial_cuda_offload_fails_require_gpu_with_its_lines(project):
    port = project.fake_env({"f16": f"--fake-log {LOGS / 'cuda-partial.log'}"}, LLAMACPP_REQUIRE_GPU="true")["f16"]
    done = project.run("start", timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == Exit.FAILED, out
    assert "f16 failed: " in done.stderr and "offloaded only 20/81 layers to the GPU (cuda)" in done.stderr
    assert "load_tensors: offloaded 20/81 layers to GPU" in done.stderr
    assert "ops/runbooks/cpu-fallback.md" in done.stderr
    assert_nothing_left(project, port, started_pids(out))


def test_full_metal_and_cuda_offloads_pass_require_gpu_and_show_in_status(project):
    project.fake_env({"q4": f"--fake-log {LOGS / 'metal-full.log'}", "f16": f"--fake-log {LOGS / 'cuda-full.log'}"},
                     LLAMACPP_REQUIRE_GPU="true")
    done = project.run("start", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = llama_rows(project)
    assert rows["q4"]["offload"] == {"backend": "metal", "layers": 81, "total": 81,
                                     "devices": ["Metal (Apple M3 Ultra)"], "cpu_fallback": []}
    assert rows["f16"]["offload"]["devices"] == ["CUDA0 (NVIDIA H100 80GB HBM3)"]
    text = project.run("status", timeout=60).stdout
    assert "metal 81/81" in text and "cuda 81/81" in text
    health = json.loads(project.run("health", "--json", timeout=60).stdout)
    assert {c["name"]: c["offload"]["backend"] for c in health["components"]} == {"q4": "metal", "f16": "cuda"}


def test_a_server_started_with_metrics_whose_metrics_does_not_answer_fails_the_start(project):
    port = project.fake_env({"q4": ""}, LLAMACPP_METRICS="true")["q4"]  # the fake: /metrics 404
    done = project.run("start", timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == Exit.FAILED, out
    assert "q4 failed: started with --metrics (LLAMACPP_Q4_METRICS), but /metrics answered HTTP 404" in done.stderr
    assert "runbook: ops/runbooks/llama-server-binary.md" in done.stderr
    assert_nothing_left(project, port, started_pids(out))

    project.fake_env({"q4": "--fake-metrics"}, LLAMACPP_METRICS="true")
    done = project.run("start", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert llama_rows(project)["q4"]["metrics"] is True
