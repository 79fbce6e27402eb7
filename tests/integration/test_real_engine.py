"""The real llama-server with the real Gemma 3 270M model: the path an operator takes.

Start two servers at once, check both healthy, ask one for a chat completion, read status, stop,
and check that the ports are free and no process is left.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from kitty_ops import config
from kitty_ops.exitcodes import Health
from kitty_ops.health import run as health_run
from kitty_ops.host import ports, probes
from tests.harness import alive, real_env, write_tiny_gguf

pytestmark = pytest.mark.real_engine


def test_two_real_servers_start_serve_and_stop_cleanly(project):
    port_of = real_env(project, {"q4": {"EXTRA_ARGS": "--no-webui"}, "summary": {}})

    code, started = project.json("start", timeout=300)
    assert code == 0, started
    assert [(s["name"], s["action"]) for s in started["components"]] == [("q4", "started"), ("summary", "started")]
    pids = {s["name"]: s["pid"] for s in started["components"]}
    assert all(alive(pid) for pid in pids.values())

    # The identity record carries what later commands need to prove the PID is ours.
    record = project.record("q4")
    assert record["pid"] == pids["q4"] and record["port"] == port_of["q4"]
    assert record["create_time"] > 0 and record["engine_version"] not in ("", "unknown")
    assert "--n-gpu-layers" in record["flags"] and "--no-webui" in record["flags"]
    assert record["model"].endswith("gemma-3-270m-q4_k_m.gguf")
    assert (project.logs / "llamacpp-q4.pid").read_text().strip() == str(pids["q4"])
    assert oct((project.logs / "llamacpp-q4.json").stat().st_mode & 0o777) == "0o600"

    # The alias is the model id, and a real completion comes back.
    status, body = probes.http_request(f"http://127.0.0.1:{port_of['q4']}/v1/models")
    assert status == 200 and "kitty-q4" in body.decode()
    chat = project.run("chat", "--server", "q4", "--max-tokens", "8", "Say hello.", timeout=120)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip() != ""

    code, status_doc = project.json("status")
    assert code == 0 and status_doc["schema"] == "kitty-ops/status/v2"
    by_name = {c["name"]: c for c in status_doc["components"] if c["tier"] == "llama"}
    for name in ("q4", "summary"):
        assert (by_name[name]["state"], by_name[name]["health"]) == ("running", "healthy")
        assert by_name[name]["pid"] == pids[name]
        assert by_name[name]["memory_bytes"] > 10 * 2**20  # a loaded model, not an empty process
        assert by_name[name]["engine"] == project.record(name)["engine_version"]

    code, stopped = project.json("stop", timeout=120)
    assert code == 0, stopped
    assert {s["name"]: s["action"] for s in stopped["components"]} == {"q4": "stopped", "summary": "stopped"}
    assert not any(alive(pid) for pid in pids.values())
    assert all(ports.is_free("127.0.0.1", port) for port in port_of.values())
    assert not list(project.logs.glob("llamacpp-*.pid")) and not list(project.logs.glob("llamacpp-*.json"))
    assert "=== kitty-ops" in (project.logs / "llamacpp-q4.log").read_text()


def test_real_server_that_fails_to_load_fails_the_start_with_its_log(project, tmp_path):
    # A file with a valid GGUF header and nothing else passes kitty-ops's header check; the real
    # engine then refuses it while loading, which is the crash-while-loading path for real.
    broken = write_tiny_gguf(tmp_path / "models" / "broken.gguf")
    real_env(project, {"q4": {}}, LLAMACPP_MODELS_DIR=str(broken.parent), LLAMACPP_Q4_MODEL=broken.name)

    done = project.run("start", timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "exited while loading" in done.stderr or "exited at once" in done.stderr
    assert "ops/runbooks/llama-server-crash.md" in done.stderr
    assert "last lines of its log" in done.stderr
    assert not list(project.logs.glob("llamacpp-*.pid"))


def test_real_binary_rejects_an_unknown_flag_before_anything_starts(project):
    real_env(project, {"q4": {"EXTRA_ARGS": "--no-such-flag-in-llama-cpp"}})
    done = project.run("validate")
    assert done.returncode == 3
    assert "LLAMACPP_Q4_EXTRA_ARGS" in done.stdout and "--no-such-flag-in-llama-cpp" in done.stdout
    started = project.run("start")
    assert started.returncode == 3
    assert not (project.logs / "llamacpp-q4.pid").exists()


def test_real_binary_accepts_normalised_operator_spellings(project):
    # Spellings from older manuals and other tools, normalised before the --help check.
    port_of = real_env(project, {"q4": {"EXTRA_ARGS": "--n_gpu_layers=0 -fa"}})
    done = project.run("start", timeout=300)
    assert done.returncode == 0, done.stderr
    argv = project.record("q4")["argv"]
    assert argv[argv.index("--flash-attn") + 1] in ("on", "off", "auto")
    assert argv.count("--n-gpu-layers") == 1 and argv[argv.index("--n-gpu-layers") + 1] == "0"
    assert argv.count("--flash-attn") == 1 and "--n_gpu_layers=0" not in argv
    assert project.run("stop").returncode == 0
    assert ports.is_free("127.0.0.1", port_of["q4"])


def test_real_server_health_while_loading_when_healthy_and_when_hung(project):
    real_env(project, {"q4": {}})
    settings, _ = config.load_settings(project.env_file, environ={"KITTY_PROJECT_DIR": str(project.root)})
    starting = project.popen("start")
    seen = []  # (level, status, detail) as health saw q4, sampled while the real model loads
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and starting.poll() is None:
        q4 = health_run.run(settings, 1.0, 5.0).components[0]
        seen.append((q4.level, q4.status, q4.detail))
        if q4.level is Health.OK:
            break
        time.sleep(0.005)
    out, err = starting.communicate(timeout=240)
    assert starting.returncode == 0, err
    statuses = [status for _, status, _ in seen]
    assert statuses[-1] == "healthy", seen[-5:]
    loading = [(level, detail) for level, status, detail in seen if status == "loading"]
    assert loading, f"never saw the real server's 503 while loading: {sorted(set(statuses))}"
    assert all(level is Health.WARNING and "503" in detail for level, detail in loading)
    assert "down" not in statuses[statuses.index("loading"):]

    done = project.run("health", "--json")
    report = json.loads(done.stdout)
    q4 = report["components"][0]
    assert done.returncode == 0 and (q4["level"], q4["status"]) == ("OK", "healthy")
    record = project.record("q4")
    assert q4["version"] == record["engine_version"] and q4["pid"] == record["pid"]
    assert q4["uptime"] > 0 and q4["latency"] < 1.0

    # Hung (SIGSTOP): the port still accepts connections, nothing answers.
    os.kill(record["pid"], signal.SIGSTOP)
    try:
        began = time.monotonic()
        hung = project.run("health", "--timeout", "1")
        assert time.monotonic() - began < 3.0
        assert hung.returncode == 2
        assert hung.stdout.startswith("KITTY CRITICAL - 0/1 healthy; critical: q4 unhealthy (timed out")
    finally:
        os.kill(record["pid"], signal.SIGCONT)
    assert project.run("health", "--quiet").returncode == 0
    assert project.run("stop").returncode == 0


def test_the_demo_model_completes_text_and_chat_says_it_has_no_template(project):
    """The demo's base model has no chat template: `complete` continues a sentence sensibly
    (the demo's own prompt), and `chat` says why its answer may ramble."""
    real_env(project, {"q4": {}})
    assert project.run("start", timeout=300).returncode == 0
    done = project.run("complete", "--max-tokens", "16", "Llamas are herbivores. A llama eats", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Llamas are herbivores. A llama eats")
    continuation = done.stdout.strip()[len("Llamas are herbivores. A llama eats"):]
    assert continuation.strip() and "<|im" not in continuation and "\n" not in continuation
    assert done.stdout.strip().endswith(".")  # to the end of the sentence
    chat = project.run("chat", "--max-tokens", "8", "Say hello.", timeout=120)
    assert chat.returncode == 0, chat.stderr
    assert "has no chat template" in chat.stderr
