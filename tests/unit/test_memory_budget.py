"""The memory budget: model files plus KV caches against physical memory, and on Apple Silicon
what is offloaded against Metal's working set.

The Mac is a recording: the sysctl values of a 192 GiB Mac Studio (hw.memsize=206158430208,
iogpu.wired_limit_mb=0, hw.optional.arm64=1) answered by a fake runner. The models are small
GGUF files with the metadata of real ones (written with the gguf package); their sizes are given
as numbers, as validate measures them.
"""

from __future__ import annotations

import types
from pathlib import Path

import gguf as gguf_pkg
import pytest

from kitty_ops.config import ServerSpec, load_settings
from kitty_ops.host.platform import Host
from kitty_ops.llama import memory, validate
from kitty_ops.llama.gguf import ModelShape
from kitty_ops.problems import Problem, Severity
from kitty_ops.runbooks import Runbook

GIB = 2**30
MAC_STUDIO_192 = {"hw.memsize": "206158430208", "hw.optional.arm64": "1", "iogpu.wired_limit_mb": "0"}
# Llama-3.3-70B and Qwen2.5-72B alike: 80 layers, 64 heads, 8 KV heads of 128.
SHAPE_70B = ModelShape("llama", 131072, 80, (8,) * 80, 128, 128)
KV_70B_16K_F16 = 80 * 8 * (128 + 128) * 2 * 16384  # 5 GiB


def recorded(values: dict[str, str]):
    """A runner that answers `sysctl -n NAME` from a recording, like a Mac would."""
    calls = []

    def run(argv, timeout):
        calls.append(list(argv))
        assert list(argv[:2]) == ["sysctl", "-n"], argv
        return f"{values[argv[2]]}\n" if argv[2] in values else None

    run.calls = calls
    return run


def mac(**sysctl: str) -> Host:
    return Host("Darwin", recorded({**MAC_STUDIO_192, **sysctl}))


# ----------------------------------------------------------------------- the working set

def test_working_set_of_a_192_gib_mac_studio_is_three_quarters_of_ram():
    assert mac().gpu_working_set() == 144 * GIB


def test_raised_wired_limit_is_the_working_set():
    assert mac(**{"iogpu.wired_limit_mb": "184320"}).gpu_working_set() == 180 * GIB


def test_working_set_of_a_32_gib_mac_is_two_thirds_of_ram():
    host = mac(**{"hw.memsize": str(32 * GIB)})
    assert host.gpu_working_set() == 32 * GIB * 2 // 3


@pytest.mark.parametrize("arm64", ["0", None], ids=["intel", "no-key"])
def test_intel_mac_has_no_working_set(arm64):
    values = {k: v for k, v in MAC_STUDIO_192.items() if k != "hw.optional.arm64"}
    if arm64 is not None:
        values["hw.optional.arm64"] = arm64
    assert Host("Darwin", recorded(values)).gpu_working_set() is None


def test_linux_has_no_working_set_and_runs_nothing():
    run = recorded({})
    assert Host("Linux", run).gpu_working_set() is None
    assert run.calls == []


# ------------------------------------------------------------------------------- KV cache

def test_kv_cache_of_a_70b_model_at_16k_is_5_gib():
    assert memory.kv_cache_bytes(SHAPE_70B, 16384, 2, 2) == KV_70B_16K_F16 == 5 * GIB


def test_kv_cache_of_a_zero_context_uses_the_training_context():
    assert memory.kv_cache_bytes(SHAPE_70B, 0, 2, 2) == 8 * KV_70B_16K_F16


def test_kv_cache_counts_only_layers_with_kv_heads():
    hybrid = ModelShape("qwen3next", None, 4, (0, 0, 0, 2), 256, 128)
    assert memory.kv_cache_bytes(hybrid, 1000, 2, 2) == 1000 * 2 * (256 + 128) * 2


@pytest.mark.parametrize("extra, k, v", [
    ((), 2.0, 2.0),
    (("--cache-type-k", "q8_0", "--cache-type-v", "q8_0"), 1.0625, 1.0625),
    (("-ctk", "q4_0"), 0.5625, 2.0),
    (("--cache-type-k=f32", "-ctv=q4_0"), 4.0, 0.5625),
    (("--cache_type_v", "Q8_0"), 2.0, 1.0625),
    (("-ctk", "q8_0", "--cache-type-k", "q4_0"), 0.5625, 2.0),  # the last one wins
    (("-ctk", "no-such-type"), 2.0, 2.0),
], ids=["default", "both-q8", "short-k", "equals", "underscore-case", "last-wins", "unknown"])
def test_cache_type_from_extra_args(extra, k, v):
    assert memory.cache_type_bytes(extra, "k") == k
    assert memory.cache_type_bytes(extra, "v") == v


def test_parallel_slots_share_the_context(tmp_path):
    one, four = specs(tmp_path, PARALLEL=1)[0], specs(tmp_path, PARALLEL=4)[0]
    assert memory.need(one, 0, SHAPE_70B).kv_cache == memory.need(four, 0, SHAPE_70B).kv_cache \
        == KV_70B_16K_F16


@pytest.mark.parametrize("layers, share", [(999, 1.0), (-1, 1.0), (0, 0.0), (81, 1.0), (27, 1 / 3)])
def test_gpu_share_follows_n_gpu_layers_over_layers_plus_output(layers, share):
    assert memory.gpu_share(layers, SHAPE_70B) == pytest.approx(share)


# ------------------------------------------------------------------------ the pure budget

def need(name: str, weights: float, kv: float = 0.0, share: float = 1.0) -> memory.Need:
    return memory.Need(name, f"LLAMACPP_{name.upper()}_", int(weights * GIB), int(kv * GIB), share)


def the_warning(problems: list[Problem]) -> Problem:
    [problem] = problems
    assert (problem.severity, problem.subject) == (Severity.WARNING, "LLAMACPP_SERVERS")
    assert problem.runbook is Runbook.OUT_OF_MEMORY
    return problem


def test_set_that_fits_ram_but_not_the_working_set_is_warned_about_with_figures_and_fixes():
    problem = the_warning(memory.budget([need("f16", 104, 5), need("q4", 46, 5)], 192 * GIB, 144 * GIB))
    assert "put 160.0 GiB on the GPU (150.0 GiB of model files + 10.0 GiB of KV cache" in problem.message
    assert "f16 104.0+5.0, q4 46.0+5.0 GiB" in problem.message
    assert "Metal's working set is 144.0 GiB of this Mac's 192.0 GiB" in problem.message
    assert "kIOGPUCommandBufferCallbackErrorOutOfMemory" in problem.message
    for fix in ("lower LLAMACPP_F16_CTX", "--cache-type-k q8_0", "LLAMACPP_<NAME>_ENABLED=false",
                "sudo sysctl iogpu.wired_limit_mb=163840"):
        assert fix in problem.fix


def test_no_sysctl_suggestion_when_it_would_leave_macos_too_little():
    problem = the_warning(memory.budget([need("f16", 180, 6)], 192 * GIB, 144 * GIB))
    assert "sysctl" not in problem.fix
    assert "lower LLAMACPP_F16_CTX" in problem.fix


def test_more_than_ram_is_the_ram_warning_even_on_a_mac():
    problem = the_warning(memory.budget([need("f16", 190, 5)], 192 * GIB, 144 * GIB))
    assert "need 195.0 GiB (190.0 GiB of model files + 5.0 GiB of KV cache" in problem.message
    assert "this machine has 192.0 GiB of memory" in problem.message


def test_cpu_only_servers_are_not_held_to_the_working_set():
    assert memory.budget([need("f16", 150, 5, share=0.0)], 192 * GIB, 144 * GIB) == []
    assert memory.budget([need("f16", 150, 5, share=0.5)], 192 * GIB, 144 * GIB) == []


def test_without_a_working_set_only_ram_counts():
    assert memory.budget([need("f16", 150, 5)], 192 * GIB, None) == []


def test_fix_names_a_generic_server_when_no_kv_cache_is_known():
    problem = the_warning(memory.budget([need("f16", 200)], 192 * GIB, None))
    assert "lower LLAMACPP_<NAME>_CTX" in problem.fix


def test_no_servers_no_warning():
    assert memory.budget([], 192 * GIB, 144 * GIB) == []


# ----------------------------------------------- validate._check_memory: files, host, budget

def write_70b(path: Path) -> Path:
    writer = gguf_pkg.GGUFWriter(str(path), "llama")
    writer.add_block_count(80)
    writer.add_embedding_length(8192)
    writer.add_head_count(64)
    writer.add_head_count_kv(8)
    writer.add_context_length(131072)
    writer.add_token_list([f"t{i}" for i in range(500)])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


def specs(root: Path, **settings: object) -> list[ServerSpec]:
    """q4 and f16 on 70B-shaped model files, 16k context, 4 slots (the roles' defaults), with
    `settings` as LLAMACPP_<SETTING> for both."""
    models = root / "models"
    models.mkdir(exist_ok=True)
    for name in ("q4.gguf", "f16.gguf"):
        write_70b(models / name)
    values = {"LLAMACPP_SERVERS": "q4,f16", "LLAMACPP_MODELS_DIR": str(models), "KITTY_COMPOSE_ENABLED": "false",
              "LLAMACPP_Q4_MODEL": "q4.gguf", "LLAMACPP_F16_MODEL": "f16.gguf",
              **{f"LLAMACPP_{k}": v for k, v in settings.items()}}
    env = root / ".env"
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    loaded, problems = load_settings(env, {"KITTY_PROJECT_DIR": str(root)})
    assert problems == []
    return list(loaded.enabled_servers)


def check_memory(root: Path, host: Host, weights: dict[str, float], monkeypatch,
                 **settings: object) -> list[Problem]:
    ram = host.total_memory() if host.is_macos else 192 * GIB
    monkeypatch.setattr(validate.psutil, "virtual_memory", lambda: types.SimpleNamespace(total=ram))
    problems: list[Problem] = []
    model_bytes = {name: int(gib * GIB) for name, gib in weights.items()}
    validate._check_memory(specs(root, **settings), model_bytes, problems, host)
    return problems


# 136 GiB of weights fit both RAM (192) and the working set (144); 2 x 5 GiB of KV cache do not.
FITTING_WEIGHTS = {"q4": 46, "f16": 90}


def test_mac_kv_cache_pushes_a_fitting_set_over_the_working_set(tmp_path, monkeypatch):
    problem = the_warning(check_memory(tmp_path, mac(), FITTING_WEIGHTS, monkeypatch))
    assert "put 146.0 GiB on the GPU (136.0 GiB of model files + 10.0 GiB of KV cache" in problem.message
    assert "working set is 144.0 GiB" in problem.message
    assert "sudo sysctl iogpu.wired_limit_mb=149504" in problem.fix


def test_mac_set_fits_with_a_smaller_context(tmp_path, monkeypatch):
    assert check_memory(tmp_path, mac(), FITTING_WEIGHTS, monkeypatch, CTX=8192) == []


def test_mac_set_fits_with_a_quantised_kv_cache(tmp_path, monkeypatch):
    assert check_memory(tmp_path, mac(), FITTING_WEIGHTS, monkeypatch,
                        EXTRA_ARGS='"--cache-type-k q8_0 --cache-type-v q8_0"') == []


def test_mac_raised_wired_limit_fixes_it(tmp_path, monkeypatch):
    raised = mac(**{"iogpu.wired_limit_mb": "149504"})  # what the warning suggested
    assert check_memory(tmp_path, raised, FITTING_WEIGHTS, monkeypatch) == []


def test_mac_model_set_that_fits_ram_but_not_the_working_set(tmp_path, monkeypatch):
    problem = the_warning(check_memory(tmp_path, mac(), {"q4": 46, "f16": 104}, monkeypatch, CTX=512))
    assert "150.0 GiB of model files" in problem.message
    assert "working set is 144.0 GiB of this Mac's 192.0 GiB" in problem.message


def test_mac_cpu_only_servers_fit_ram(tmp_path, monkeypatch):
    assert check_memory(tmp_path, mac(), {"q4": 46, "f16": 104}, monkeypatch, CTX=512,
                        N_GPU_LAYERS=0) == []


def test_linux_set_that_fits_ram_is_fine(tmp_path, monkeypatch):
    linux = Host("Linux", recorded({}))
    assert check_memory(tmp_path, linux, {"q4": 46, "f16": 104}, monkeypatch) == []


def test_linux_kv_cache_counts_against_ram(tmp_path, monkeypatch):
    linux = Host("Linux", recorded({}))
    problem = the_warning(check_memory(tmp_path, linux, {"q4": 46, "f16": 140}, monkeypatch))
    assert "need 196.0 GiB (186.0 GiB of model files + 10.0 GiB of KV cache" in problem.message
    assert "this machine has 192.0 GiB of memory" in problem.message


def test_unreadable_metadata_is_a_warning_and_the_budget_still_runs(tmp_path, monkeypatch):
    server_specs = specs(tmp_path)
    f16 = next(s for s in server_specs if s.name == "f16")
    f16.model.write_bytes(f16.model.read_bytes()[:100])  # header intact, metadata cut
    monkeypatch.setattr(validate.psutil, "virtual_memory", lambda: types.SimpleNamespace(total=192 * GIB))
    problems: list[Problem] = []
    validate._check_memory(server_specs, {"q4": 200 * GIB, "f16": 0}, problems, Host("Linux", recorded({})))
    model, budget = problems
    assert (model.severity, model.subject) == (Severity.WARNING, "LLAMACPP_F16_MODEL")
    assert "metadata is truncated" in model.message and model.runbook is Runbook.MODEL_FILES
    assert the_warning([budget]).message.startswith("the enabled servers need 205.0 GiB")


def test_model_already_reported_bad_is_not_read_again(tmp_path, monkeypatch):
    server_specs = specs(tmp_path)
    f16 = next(s for s in server_specs if s.name == "f16")
    f16.model.unlink()
    monkeypatch.setattr(validate.psutil, "virtual_memory", lambda: types.SimpleNamespace(total=192 * GIB))
    reported = Problem(Severity.ERROR, "LLAMACPP_F16_MODEL", "file not found", "", Runbook.MODEL_FILES)
    problems = [reported]
    validate._check_memory(server_specs, {"q4": GIB}, problems, Host("Linux", recorded({})))
    assert problems == [reported]
