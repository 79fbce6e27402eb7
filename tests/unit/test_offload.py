"""What a llama-server runs on, read from its load log (kitty_ops.llama.offload): each recorded
log of tests/fixtures/llama_logs (its README says which were recorded on this machine and which
were written from llama.cpp's source), the REQUIRE_GPU decision, what --n-gpu-layers asks, and
the record's copy. Pure: no process, no file but the fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from kitty_ops.host import records
from kitty_ops.llama import offload
from kitty_ops.llama.offload import ALL, CPU, UNKNOWN, Offload

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "llama_logs"


def parsed(name: str) -> Offload:
    return offload.parse((LOGS / name).read_text(encoding="utf-8").splitlines())


# ------------------------------------------------------------------------------ the parser

# fixture -> (backend, layers, total, devices, the table's words)
EXPECTED = {
    "metal-full.log": ("metal", 81, 81, ("Metal (Apple M3 Ultra)",), "metal 81/81"),
    "metal-mtl0.log": ("metal", 63, 63, ("MTL0 (Apple M2 Max)",), "metal 63/63"),
    "cuda-full.log": ("cuda", 81, 81, ("CUDA0 (NVIDIA H100 80GB HBM3)",), "cuda 81/81"),
    "cuda-partial.log": ("cuda", 20, 81, ("CUDA0 (NVIDIA GeForce RTX 4090)",), "cuda 20/81"),
    "vulkan.log": ("vulkan", 33, 33, ("Vulkan0 (AMD Radeon RX 7900 XTX (RADV NAVI31))",), "vulkan 33/33"),
    "gpu-none-usable.log": (CPU, 0, 81, ("CPU",), "cpu"),
    "old-cpu.log": (CPU, 0, 23, ("CPU",), "cpu"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_recorded_log_says_its_backend_devices_and_layers(name):
    found = parsed(name)
    backend, layers, total, devices, words = EXPECTED[name]
    assert (found.backend, found.layers, found.total, found.devices) == (backend, layers, total, devices)
    assert found.describe() == words
    assert found.evidence and all(line in (LOGS / name).read_text() for line in found.evidence)


def test_the_cpu_only_log_recorded_on_this_machine():
    """The real engine of `make setup` on this GPU-less box, at the verbosity kitty-ops sets: no
    offload line at all (a build without a usable GPU prints none), the model in CPU buffers,
    and the engine's warning that the GPU layers asked for are ignored."""
    found = parsed("cpu-only.log")
    assert (found.backend, found.devices, found.layers) == (CPU, ("CPU",), 0)
    assert found.total == 19  # Gemma 3 270M: 18 layers + the output layer
    assert found.describe() == "cpu"
    assert found.cpu_fallback == ("warning: no usable GPU found, --gpu-layers option will be ignored",)
    assert any("load_tensors:   CPU_Mapped model buffer size" in line for line in found.evidence)


def test_the_cpu_fallback_shows_even_at_the_engines_default_verbosity():
    """At its default verbosity the current engine writes none of the library's lines; its
    warning alone still says the GPU is out of the picture (the layer total is then unknown)."""
    found = parsed("cpu-only-default-verbosity.log")
    assert (found.backend, found.layers, found.total, found.describe()) == (CPU, 0, None, "cpu")
    assert offload.gpu_shortfall(found, ALL) == (
        "it runs on the CPU (warning: no usable GPU found, --gpu-layers option will be ignored); "
        "asked for all layers on the GPU")


def test_gpu_asked_but_none_usable_keeps_the_engines_reasons_first_cause_first():
    found = parsed("gpu-none-usable.log")
    assert found.cpu_fallback == (
        "ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected",
        "warning: no usable GPU found, --gpu-layers option will be ignored")
    assert "warning: no usable GPU found, --gpu-layers option will be ignored" in found.evidence


def test_the_cuda_partial_log_holds_the_offload_and_buffer_lines():
    found = parsed("cuda-partial.log")
    assert "load_tensors: offloaded 20/81 layers to GPU" in found.evidence
    assert any(line.startswith("load_tensors:   CPU_Mapped model buffer size") for line in found.evidence)
    assert not found.cpu_fallback


def test_a_log_that_names_no_device_is_unknown():
    found = offload.parse(["fake llama-server: pid 42 port 8083", "fake: model loading"])
    assert (found.backend, found.layers, found.devices, found.describe()) == (UNKNOWN, None, (), None)
    assert not found.on_gpu


def test_only_the_first_model_counts_not_a_draft_model_loaded_after_it():
    lines = ["load_tensors: offloaded 81/81 layers to GPU", "load_tensors:        CUDA0 model buffer size = 1.00 MiB",
             "load_tensors: offloaded 0/29 layers to GPU", "load_tensors:        CUDA1 model buffer size = 1.00 MiB"]
    found = offload.parse(lines)
    assert (found.backend, found.layers, found.total, found.devices) == ("cuda", 81, 81, ("CUDA0",))


def test_timestamped_lines_and_the_using_device_line_with_a_pci_id():
    lines = ["0.00.004.100 I llama_model_load_from_file_impl: using device CUDA0 (NVIDIA H100 80GB HBM3) "
             "(0000:01:00.0) - 80562 MiB free",
             "0.00.004.516 I load_tensors: offloaded 81/81 layers to GPU"]
    found = offload.parse(lines)
    assert (found.describe(), found.devices) == ("cuda 81/81", ("CUDA0 (NVIDIA H100 80GB HBM3)",))


@pytest.mark.parametrize("device, backend", [
    ("CUDA0", "cuda"), ("Metal_Mapped", "metal"), ("MTL0_Mapped", "metal"), ("Vulkan1", "vulkan"),
    ("ROCm0", "rocm"), ("SYCL0", "sycl"), ("CPU_Mapped", None), ("CPU", None), ("CPU_REPACK", None),
    ("CUDA_Host", None), ("AMX", None)])
def test_device_names_map_to_backends_and_host_memory_to_none(device, backend):
    assert offload.backend_of(device) == backend


# ------------------------------------------------------------------------------ what was asked

@pytest.mark.parametrize("args, asked", [
    (["--n-gpu-layers", "999"], ALL), (["--n-gpu-layers", "20"], 20), (["--n-gpu-layers", "0"], 0),
    (["--n-gpu-layers", "998"], 998),
    (["--n-gpu-layers", "-1"], ALL), (["-ngl", "auto"], ALL), (["--gpu-layers=all"], ALL), ([], ALL),
    (["--n-gpu-layers", "999", "--metrics", "-ngl", "20"], 20),  # the last one wins, as in llama.cpp
])
def test_asked_layers_from_the_command_line(args, asked):
    assert offload.asked_layers(["llama-server", "--model", "m.gguf", *args]) == asked


# ------------------------------------------------------------------------ REQUIRE_GPU (pure)

@pytest.mark.parametrize("name, asked, fails_with", [
    ("metal-full.log", ALL, None),
    ("cuda-full.log", 999, None),
    ("vulkan.log", ALL, None),
    ("cuda-partial.log", 20, None),  # asked for 20, got 20: as asked
    ("cuda-partial.log", ALL, "offloaded only 20/81 layers to the GPU (cuda)"),
    ("cuda-partial.log", 40, "asked for 40 layers"),
    ("cuda-partial.log", 81, "asked for all layers"),  # as many as the model has: all of them
    ("gpu-none-usable.log", ALL, "runs on the CPU (ggml_cuda_init: failed to initialize CUDA"),
    ("cpu-only.log", 999, "runs on the CPU"),
    ("old-cpu.log", 0, "asks for no GPU layers"),
])
def test_require_gpu_fails_a_cpu_fallback_and_a_short_offload(name, asked, fails_with):
    why = offload.gpu_shortfall(parsed(name), asked)
    if fails_with is None:
        assert why is None
    else:
        assert why is not None and fails_with in why, why


def test_require_gpu_fails_when_the_log_cannot_show_a_gpu():
    why = offload.gpu_shortfall(offload.parse(["fake: model loading"]), ALL)
    assert why is not None and "cannot be shown to run on a GPU" in why


def test_a_gpu_backend_without_layer_counts_passes():
    found = offload.parse(["load_tensors:      Vulkan0 model buffer size =  4403.49 MiB"])
    assert (found.backend, found.layers, found.describe()) == ("vulkan", None, "vulkan")
    assert offload.gpu_shortfall(found, ALL) is None


# ------------------------------------------------------------------------------ the record

def test_the_record_keeps_it_and_gives_it_back():
    found = parsed("cuda-partial.log")
    assert Offload.from_dict(found.as_dict()) == found
    assert found.summary() == {"backend": "cuda", "layers": 20, "total": 81,
                               "devices": ["CUDA0 (NVIDIA GeForce RTX 4090)"], "cpu_fallback": []}
    for junk in (None, [], {"layers": 3}, {"backend": 7}):
        assert Offload.from_dict(junk) is None


def test_a_run_is_read_from_its_log_offset_on(tmp_path):
    log = tmp_path / "llamacpp-q4.log"
    log.write_text("load_tensors: offloaded 81/81 layers to GPU\n")  # an earlier run, on a GPU
    offset = log.stat().st_size
    with log.open("a") as handle:
        handle.write((LOGS / "gpu-none-usable.log").read_text())
    found = offload.parse(records.head(log, offset))
    assert found.backend == CPU
    # A line cut by the byte limit is left out, not half-read.
    assert records.head(log, 0, 20) == []
    assert records.head(log, 0, len("load_tensors: offloaded 81/81 layers to GPU\n")) == [
        "load_tensors: offloaded 81/81 layers to GPU"]
