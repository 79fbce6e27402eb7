"""Bench records: the model's identity, saving and loading, which earlier run is comparable, and
the comparison that fails the command on a regression (pure)."""

from __future__ import annotations

import json

from kitty_ops.bench import record


def run(created: float, gen: float = 50.0, ttft: float = 0.05, agg: float = 45.0, seed: int = 42,
        levels=(1,), complete: bool = True, engine: str = "6500 (abc1)", flags=("--threads 1",)) -> dict:
    return {
        "schema": record.RECORD_SCHEMA, "role": "q4", "created_ts": created, "created_at": f"t{created}",
        "complete": complete, "kitty_ops": "0.1.0", "host": {"machine": "x86_64", "cpu_count": 2},
        "engine": {"version": engine}, "model": {"file": "m.gguf", "bytes": 100, "hash": "sha256:ab"},
        "server": {"flags": list(flags), "threads": 1, "total_slots": 2},
        "options": {"prompt_tokens": 32, "max_tokens": 16, "requests": 4, "seed": seed},
        "levels": [{"concurrency": c, "completed": 4, "gen_tps_p50": gen, "ttft_p50": ttft, "aggregate_tps": agg}
                   for c in levels],
    }


def test_a_slower_generation_rate_beyond_the_threshold_is_a_regression():
    result = record.compare(run(1), run(2, gen=40.0), threshold=10, against=".logs/bench/q4-1.json")
    [gen] = [c for c in result.changes if c.figure == "gen_tps_p50"]
    assert gen.regression and gen.worse_pct == 20.0
    assert gen.describe("q4") == ("q4 at concurrency 1: generation tokens/s 50.00 tok/s -> 40.00 tok/s "
                                  "(20.0% worse)")
    assert result.regressions == (gen,) and result.against == ".logs/bench/q4-1.json"
    assert not record.compare(run(1), run(2, gen=40.0), threshold=25).regressions
    assert not record.compare(run(1), run(2, gen=60.0), threshold=10).regressions  # faster is never one


def test_a_slower_first_token_is_a_regression_only_beyond_the_noise_floor_too():
    slower = record.compare(run(1, ttft=0.050), run(2, ttft=0.080), threshold=10)
    assert [c.figure for c in slower.regressions] == ["ttft_p50"]
    assert slower.regressions[0].describe("q4").endswith("50.0 ms -> 80.0 ms (60.0% worse)")
    tiny = record.compare(run(1, ttft=0.002), run(2, ttft=0.004), threshold=10)  # +100%, but 2 ms
    assert not tiny.regressions


def test_the_aggregate_is_reported_but_does_not_fail_the_run():
    result = record.compare(run(1, agg=45.0), run(2, agg=20.0), threshold=10)
    [agg] = [c for c in result.changes if c.figure == "aggregate_tps"]
    assert agg.worse_pct > 50 and not agg.regression and not result.regressions


def test_what_changed_between_the_runs_is_said():
    result = record.compare(run(1), run(2, engine="6600 (def2)", flags=("--threads 4",)), threshold=10)
    assert "engine: 6500 (abc1) -> 6600 (def2)" in result.differences
    assert "server flags: --threads 1 -> --threads 4" in result.differences
    gpu, cpu = run(1), run(2)
    gpu["server"]["offload"], cpu["server"]["offload"] = "cuda 81/81", "cpu"
    assert "offload: cuda 81/81 -> cpu" in record.compare(gpu, cpu, threshold=10).differences
    assert record.compare(run(1), run(2), threshold=10).differences == ()


def test_the_last_comparable_run_is_the_newest_complete_one_with_the_same_options_and_a_level():
    history = [(f"p{i}", r) for i, r in enumerate([
        run(1), run(2), run(3, complete=False), run(4, seed=7), run(5, levels=(4,))])]
    found = record.last_comparable(history, run(9, levels=(1, 2)))
    assert found is not None and found[0] == "p1"
    assert record.last_comparable(history, run(9, seed=8)) is None
    other_model = run(9)
    other_model["model"]["hash"] = "sha256:cd"
    assert record.last_comparable(history, other_model) is None


def test_records_are_saved_atomically_private_and_loaded_oldest_first(tmp_path):
    first = record.save(tmp_path, run(1_800_000_000.0))
    second = record.save(tmp_path, run(1_800_000_000.0, gen=1.0))  # the same second: a new name
    assert first != second and first.parent == tmp_path / "bench"
    assert first.name == "q4-20270115T080000Z.json"
    assert oct(first.stat().st_mode & 0o777) == "0o600"
    (tmp_path / "bench" / "q4-garbage.json").write_text("{not json")
    (tmp_path / "bench" / "f16-x.json").write_text(json.dumps(run(3)))  # another role's name
    loaded = record.load_all(tmp_path, "q4")
    assert [p for p, _ in loaded] == [first, second]


def test_the_model_is_identified_by_size_and_a_hash_of_its_first_bytes(tmp_path):
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    a.write_bytes(b"GGUF" + b"x" * 100)
    b.write_bytes(b"GGUF" + b"x" * 100 + b"tail")  # same first bytes, longer
    c.write_bytes(b"GGUF" + b"y" * 100)
    ida, idb, idc = (record.model_identity(p, hash_bytes=64) for p in (a, b, c))
    assert ida["hash"] == idb["hash"] and ida["bytes"] != idb["bytes"]
    assert ida["hash"] != idc["hash"] and ida["hash"].startswith("sha256:") and len(ida["hash"]) == 7 + 16
    assert ida["file"] == "a.gguf" and ida["hashed_bytes"] == 64


def test_flags_are_kept_as_flag_value_pairs_without_the_places():
    argv = ["--model", "/models/m.gguf", "--host", "127.0.0.1", "--port", "8083", "--threads", "4", "--metrics",
            "--n-gpu-layers", "-1", "--fake-token-ms", "2", "--jinja"]
    assert record.flag_pairs(argv) == ["--threads 4", "--metrics", "--n-gpu-layers -1", "--fake-token-ms 2", "--jinja"]
    assert record.flag_value(argv, "--threads") == "4" and record.flag_value(argv, "--parallel") is None
