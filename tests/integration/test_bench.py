"""`kitty-ops bench` end to end, the way an operator runs it.

With the real llama-server and the real model (two slots, one thread): the figures are there,
plausible and consistent with each other and with the server's own account (its `timings` and
its `/metrics` counter), memory is sampled, the run is saved, and the next run says which
record it was compared with. With the fake server, what a real one cannot be made to do on
demand: get slower between two runs (the bench fails, naming the regression), die mid-bench,
or not run at all."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.harness import real_env

QUICK = ("--concurrency", "1", "--requests", "4", "--max-tokens", "16")
KEY = "kitty-bench-key-5d1e0c"


@pytest.mark.real_engine
def test_a_real_server_is_measured_saved_and_compared_with_the_next_run(project):
    real_env(project, {"q4": {"PARALLEL": 2, "API_KEY": KEY}})  # every request of the bench carries it
    started = project.run("start", timeout=300)
    assert started.returncode == 0, started.stderr
    pid = project.record("q4")["pid"]

    began = time.monotonic()
    code, out = project.json("bench", "q4", "--concurrency", "1,2", "--requests", "4", "--max-tokens", "16",
                             "--prompt-tokens", "32", "--yardstick", timeout=180)
    took = time.monotonic() - began
    assert code == 0, out
    assert out["schema"] == "kitty-ops/bench/v1" and out["ok"] is True
    [role] = out["roles"]
    assert role["name"] == "q4" and role["failure"] is None
    record = role["record"]
    levels = {level["concurrency"]: level for level in record["levels"]}
    assert sorted(levels) == [1, 2]
    for c, level in levels.items():
        where = f"concurrency {c}: {level}"
        assert (level["completed"], level["errors"]) == (4, 0), where
        assert level["tokens"] == 4 * 16, where  # ignore_eos: every request exactly n_predict tokens
        assert level["gen_tps_p50"] > 0 and level["aggregate_tps"] > 0 and level["prompt_tps_p50"] > 0, where
        assert level["ttft_p95"] >= level["ttft_p50"] > 0, where
        assert level["latency_p95"] >= level["latency_p50"] > level["ttft_p50"], where
        assert level["aggregate_tps"] == pytest.approx(level["tokens"] / level["wall"], rel=0.01), where
        assert 20 <= level["prompt_tokens"] <= 48, where  # ~32 prompt tokens, as the server counted them
        # the client's clock and the server's own timings tell the same story
        assert level["agreement"]["ok"] is True, where
        # the server's counter saw at least every token we received
        assert level["metrics"]["ok"] is True and level["metrics"]["tokens_predicted_delta"] >= 64, where
        memory = level["memory"]
        assert memory["samples"] >= 2 and level["samples"] == memory["samples"], where
        assert memory["rss_peak"] >= memory["rss_avg"] > 50 * 2**20, where  # a loaded model, not an empty process
    # two slots serve two streams at once: together at least about as fast as one alone
    assert levels[2]["aggregate_tps"] >= levels[1]["aggregate_tps"] * 0.8, levels
    assert took < 60, took

    # llama-bench on the same model file and thread: the server's single stream against the engine alone
    stick = record["yardstick"]
    assert (stick["n_prompt"], stick["n_gen"], stick["threads"]) == (32, 16, 1), stick
    assert stick["pp_tps"] > stick["tg_tps"] > 0 and stick["server_single_stream_tps"] == levels[1]["gen_tps_p50"]
    assert 0.3 < stick["ratio"] < 3, stick  # the same engine and model: the same order of magnitude
    assert stick["argv"][0] == "llama-bench" and "-fa" in stick["argv"] and "-ngl" in stick["argv"]

    # The record explains the numbers.
    saved = Path(role["saved"])
    assert saved.parent == project.logs / "bench" and saved.name.startswith("q4-")
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    kept = json.loads(saved.read_text())
    assert kept["complete"] is True and kept["engine"]["version"] == project.record("q4")["engine_version"]
    assert kept["model"]["file"] == "gemma-3-270m-q4_k_m.gguf" and kept["model"]["hash"].startswith("sha256:")
    assert kept["model"]["bytes"] > 100 * 2**20
    assert (kept["server"]["pid"], kept["server"]["threads"], kept["server"]["total_slots"]) == (pid, 1, 2)
    assert "--threads 1" in kept["server"]["flags"] and kept["host"]["cpu_count"] >= 1
    assert kept["server"]["offload"] == project.record("q4")["offload"]["backend"] == "cpu"  # what start read
    assert kept["options"]["max_tokens"] == 16 and kept["kitty_ops"]
    assert len(kept["levels"][0]["samples"]) == levels[1]["memory"]["samples"]  # every sample kept
    assert role["compared"].startswith("nothing to compare with")
    assert KEY not in saved.read_text() and KEY not in json.dumps(out)

    # The next run is compared with it. The threshold is one no noise reaches (another job on these
    # 2 cores can halve a figure); the fake server test below checks that a regression fails.
    again = project.run("bench", "q4", "--concurrency", "1,2", "--requests", "4", "--max-tokens", "16",
                        "--prompt-tokens", "32", "--threshold", "1000", timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"compared with {saved}" in again.stdout
    assert "q4 at concurrency 1: generation tokens/s" in again.stdout
    assert "q4 at concurrency 2: time to first token" in again.stdout
    assert len(list((project.logs / "bench").glob("q4-*.json"))) == 2
    assert project.run("stop").returncode == 0


def gen_figures(message: str) -> tuple[float, float]:
    found = re.search(r"generation tokens/s ([\d.]+) tok/s -> ([\d.]+) tok/s", message)
    assert found, message
    return float(found[1]), float(found[2])


def test_a_server_that_got_slower_fails_the_bench_naming_the_regression(project):
    project.fake_env({"q4": "--fake-token-ms 3"})
    assert project.run("start").returncode == 0
    first = project.run("bench", "q4", *QUICK)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "nothing to compare with" in first.stdout
    assert "no cross-check against them" in first.stdout  # the fake has no /metrics: said, not failed
    [baseline] = (project.logs / "bench").glob("q4-*.json")

    assert project.run("stop").returncode == 0
    project.fake_env({"q4": "--fake-token-ms 12"})  # the same model file and options; four times slower
    assert project.run("start").returncode == 0
    second = project.run("bench", "q4", *QUICK)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "regression beyond the 10% threshold: q4 at concurrency 1: generation tokens/s" in second.stderr
    assert "ops/runbooks/bench-regression.md" in second.stderr
    old, new = gen_figures(second.stderr)
    assert new < old * 0.6, (old, new)
    assert f"compared with {project.logs.resolve() / 'bench' / baseline.name}" in second.stdout
    assert "changed since: server flags: --fake-token-ms 3 -> --fake-token-ms 12" in second.stdout

    # A regression is judged against the last comparable run, so the slow run is now the baseline.
    third = project.run("bench", "q4", *QUICK, "--threshold", "50")
    assert third.returncode == 0, third.stdout + third.stderr


def test_a_server_that_dies_mid_bench_ends_it_with_its_log(project):
    project.fake_env({"q4": "--fake-token-ms 50 --fake-die-after 4"})
    assert project.run("start").returncode == 0
    began = time.monotonic()
    done = project.run("bench", "q4", "--concurrency", "1", "--requests", "30", "--max-tokens", "16", timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - began < 15  # ended when it died, not after 30 requests or the deadline
    assert "q4 exited during the bench (concurrency 1)" in done.stderr
    assert "GGML_ASSERT failed" in done.stderr and "ops/runbooks/llama-server-crash.md" in done.stderr
    [kept] = (project.logs / "bench").glob("q4-*.json")
    assert json.loads(kept.read_text())["complete"] is False  # saved, never a baseline


def test_a_server_not_running_is_named_with_the_next_step(project):
    project.fake_env({"q4": ""})
    done = project.run("bench", "q4")
    assert done.returncode == 1
    assert "q4 is not running" in done.stderr and "kitty-ops start --only q4" in done.stderr
    assert not (project.logs / "bench").exists()
    assert project.run("bench", "nope").returncode == 2


def test_levels_above_the_slots_are_capped_and_the_deadline_is_kept(project):
    project.fake_env({"q4": "--fake-token-ms 1"}, LLAMACPP_Q4_PARALLEL=2)
    assert project.run("start").returncode == 0
    code, out = project.json("bench", "--concurrency", "1,2,4", "--requests", "3", "--max-tokens", "4",
                             "--no-compare")
    assert code == 0, out
    [role] = out["roles"]
    assert [(level["concurrency"], level["asked"]) for level in role["record"]["levels"]] == [(1, [1]), (2, [2, 4])]
    assert any("concurrency 4 capped at 2" in note and "/props total_slots" in note for note in role["notes"])
    assert role["comparison"] is None and role["saved"]

    assert project.run("stop").returncode == 0
    project.fake_env({"q4": "--fake-token-ms 200"})
    assert project.run("start").returncode == 0
    began = time.monotonic()
    done = project.run("bench", "--concurrency", "1", "--requests", "50", "--max-tokens", "8", "--deadline", "3")
    assert time.monotonic() - began < 10
    assert done.returncode == 1 and "deadline" in done.stderr, done.stderr
