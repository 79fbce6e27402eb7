"""What a llama-server really runs on: its devices and how many layers it offloaded, read from
the lines llama.cpp writes while it loads a model; and whether that is what the operator asked.

Why: llama-server never refuses to start for want of a GPU. A build without a GPU backend, a
missing driver, a Metal/CUDA device that fails to initialise, or a model too large for the
GPU's memory all end the same way: `/health` says 200 and the server answers, at a tenth of the
speed, on the CPU. `/health` and `/props` cannot tell (`/props` names no device), so the log is
the one witness. Pure: lines in, an Offload out (kitty_ops.llama.verify reads the log after a
server turns healthy, start keeps the result in the server's record, `status` shows it).

The lines, from llama.cpp's source (src/llama-model.cpp, src/llama.cpp, common/arg.cpp and the
ggml backends), old spellings and new:

  load_tensors: offloaded 81/81 layers to GPU             (llm_load_tensors: before 2025;
                                                           printed only when a GPU backend exists)
  load_tensors:        CUDA0 model buffer size = ...      (Metal_Mapped, MTL0_Mapped, Vulkan0, ROCm0,
  load_tensors:   CPU_Mapped model buffer size = ...       SYCL0; CPU*, *_Host are host memory)
  llama_model_load_from_file_impl: using device CUDA0 (NVIDIA H100 80GB HBM3) - 80000 MiB free
  ggml_cuda_init: found 1 CUDA devices:  /  Device 0: NVIDIA H100 80GB HBM3, compute capability 9.0
  ggml_metal_init: found device: Apple M3 Ultra          (ggml_metal_device_init: GPU name: MTL0 (...))
  ggml_vulkan: Found 1 Vulkan devices:  /  ggml_vulkan: 0 = NVIDIA GeForce RTX 4090 (NVIDIA) | ...
  warning: no usable GPU found, --gpu-layers option will be ignored
  print_info: n_layer = 80                               (llm_load_print_meta: before 2025)

The layer count is llama.cpp's: the repeating layers plus the output layer (81 for an 80-layer
model); --n-gpu-layers counts the same way. Current builds write the library's lines (all but
the `no usable GPU` warning) only at log verbosity 4 ("trace"; 3 is their default), so kitty-ops
starts servers with LLAMA_ARG_LOG_VERBOSITY=4 (kitty_ops.llama.lifecycle.server_environment);
builds from before that change write them at their default.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

from kitty_ops.llama import command

CPU = "cpu"
UNKNOWN = "unknown"
EVIDENCE_LINES = 12  # the lines a message quotes at most

# A device's name -> its backend, by the name's prefix (ggml_backend_dev_name: CUDA0, MTL0, ...).
_BACKEND_PREFIXES = (("cuda", "cuda"), ("mtl", "metal"), ("metal", "metal"), ("vulkan", "vulkan"),
                     ("rocm", "rocm"), ("hip", "rocm"), ("sycl", "sycl"), ("cann", "cann"),
                     ("opencl", "opencl"), ("musa", "musa"), ("rpc", "rpc"), ("kompute", "kompute"))

_OFFLOADED = re.compile(r"\boffload(?:ed|ing) (\d+)/(\d+) layers to GPU")
_BUFFER = re.compile(r"load_tensors:\s+(\S+) (?:model )?buffer size\s*=")  # `CPU buffer size` before late 2024
# `using device CUDA0 (NVIDIA H100 80GB HBM3) (0000:01:00.0) - 80562 MiB free`; a description may
# hold parentheses itself (`AMD Radeon RX 7900 XTX (RADV NAVI31)`).
_USING = re.compile(r"\busing device (\S+) \((.*?)\)(?: \([^()]*\))? - \d+ MiB free")
_CUDA_DEVICE = re.compile(r"^\s*Device (\d+): (.+?), compute capability")
_VULKAN_DEVICE = re.compile(r"ggml_vulkan: (\d+) = ([^|]+?)\s*(?:\||$)")
_METAL_FOUND = re.compile(r"ggml_metal_init: found device: (.+?)\s*$")
_METAL_GPU_NAME = re.compile(r"ggml_metal_device_init: GPU name:\s+(?:(\S+) \((.+)\)|(.+?))\s*$")
_FOUND = re.compile(r"(ggml_cuda_init: found \d+ CUDA devices|ggml_vulkan: Found \d+ Vulkan devices"
                    r"|load_backend: loaded \S+ backend)")
_N_LAYER = re.compile(r"(?:print_info|llm_load_print_meta): n_layer\s*=\s*(\d+)\s*$")
# The engine saying the GPU is out of the picture, whatever was asked.
_NO_GPU = re.compile(r"no usable GPU found|failed to initiali[sz]e (?:CUDA|Metal|Vulkan|ROCm|HIP|SYCL)"
                     r"|ggml_metal_init: error|ggml_vulkan: No devices found|"
                     r"CUDA driver version is insufficient|no CUDA-capable device is detected", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Offload:
    """Where one server's model lives, as its log says."""

    backend: str  # cpu | metal | cuda | vulkan | rocm | sycl | ... | unknown (the log says nothing)
    devices: tuple[str, ...] = ()  # the GPUs holding the model: "CUDA0 (NVIDIA H100 80GB HBM3)"; ("CPU",) on the CPU
    layers: int | None = None  # layers offloaded to the GPU (0 on the CPU); None: not said
    total: int | None = None  # the model's layers as llama.cpp counts them (repeating + output)
    cpu_fallback: tuple[str, ...] = ()  # the engine's own words that the GPU is out of the picture
    evidence: tuple[str, ...] = ()  # the log lines all this was read from

    @property
    def on_gpu(self) -> bool:
        return self.backend not in (CPU, UNKNOWN)

    def describe(self) -> str | None:
        """The status table's words: `cpu`, `metal 81/81`, `cuda 20/81`; None when unknown."""
        if self.backend == UNKNOWN:
            return None
        if self.backend == CPU:
            return CPU
        if self.layers is not None and self.total:
            return f"{self.backend} {self.layers}/{self.total}"
        return self.backend

    def as_dict(self) -> dict:
        """What the record keeps and `status --json` shows (`offload`)."""
        return {"backend": self.backend, "layers": self.layers, "total": self.total,
                "devices": list(self.devices), "cpu_fallback": list(self.cpu_fallback),
                "evidence": list(self.evidence)}

    def summary(self) -> dict:
        """What `status --json` and `health --json` show: the record's copy without the log lines."""
        return {k: v for k, v in self.as_dict().items() if k != "evidence"}

    @classmethod
    def from_dict(cls, data: object) -> "Offload | None":
        """The record's copy back; None for anything that is not one (an older or damaged record)."""
        if not isinstance(data, dict) or not isinstance(data.get("backend"), str):
            return None

        def number(key: str) -> int | None:
            value = data.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        def words(key: str) -> tuple[str, ...]:
            value = data.get(key)
            return tuple(str(v) for v in value) if isinstance(value, list) else ()

        return cls(data["backend"], words("devices"), number("layers"), number("total"),
                   words("cpu_fallback"), words("evidence"))


def backend_of(device: str) -> str | None:
    """`CUDA0` -> cuda, `MTL0`/`Metal` -> metal, `Vulkan1` -> vulkan; None for host memory (`CPU`,
    `CPU_Mapped`, `CPU_REPACK`, `CUDA_Host`, `AMX`, `BLAS`) and names it does not know."""
    name = device.removesuffix("_Mapped").lower()
    if name.startswith("cpu") or name.endswith("_host") or name in ("amx", "blas", "accel"):
        return None
    for prefix, backend in _BACKEND_PREFIXES:
        if name.startswith(prefix):
            return backend
    return None


def parse(lines: Iterable[str]) -> Offload:
    """The Offload of one model load: the lines of one run of a server (from its record's log
    offset on). The first model the log loads is the server's own (a draft model or a vision
    projector loads later and is not counted)."""
    layers = total = n_layer = None
    gpus: list[str] = []  # device names holding the model, in the order the log names them
    described: dict[str, str] = {}  # device name -> what it is
    fallback: list[str] = []
    evidence: list[str] = []
    host_buffers = False
    models_seen = 0

    def keep(line: str) -> None:
        if line not in evidence and len(evidence) < EVIDENCE_LINES:
            evidence.append(line)

    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if (m := _N_LAYER.search(line)) and n_layer is None:
            n_layer = int(m.group(1))
        if m := _OFFLOADED.search(line):
            models_seen += 1
            if models_seen == 1:
                layers, total = int(m.group(1)), int(m.group(2))
                keep(line)
            continue
        if (m := _BUFFER.search(line)) and models_seen <= 1:
            device = m.group(1)
            if backend_of(device):
                name = device.removesuffix("_Mapped")
                if name not in gpus:
                    gpus.append(name)
            else:
                host_buffers = True
            keep(line)
        elif m := _USING.search(line):
            if m.group(1) not in gpus:
                gpus.append(m.group(1))
            described[m.group(1)] = m.group(2)  # the engine's own name for the device it uses
            keep(line)
        elif m := _CUDA_DEVICE.search(line):
            described.setdefault(f"CUDA{m.group(1)}", m.group(2))
            keep(line)
        elif m := _VULKAN_DEVICE.search(line):
            described.setdefault(f"Vulkan{m.group(1)}", m.group(2))
            keep(line)
        elif m := _METAL_FOUND.search(line):
            described.setdefault("Metal", m.group(1))
            described.setdefault("MTL0", m.group(1))
            keep(line)
        elif m := _METAL_GPU_NAME.search(line):
            if m.group(1):
                described.setdefault(m.group(1), m.group(2))
            else:
                described.setdefault("Metal", m.group(3))
                described.setdefault("MTL0", m.group(3))
            keep(line)
        elif _NO_GPU.search(line):
            fallback.append(line)
            keep(line)
        elif _FOUND.search(line):
            keep(line)

    if total is None and n_layer is not None:
        total = n_layer + 1
    devices = tuple(f"{name} ({described[name]})" if name in described else name for name in gpus)
    if layers == 0 or (layers is None and not gpus and (fallback or host_buffers)):
        # Nothing on a GPU: offloaded 0/N, or a CPU-only build (no offload line at all) whose
        # model buffers are all in host memory, or the engine said no GPU is usable.
        return Offload(CPU, ("CPU",), 0, total, tuple(fallback), tuple(evidence))
    if gpus:
        return Offload(backend_of(gpus[0]) or UNKNOWN, devices, layers, total, tuple(fallback), tuple(evidence))
    if layers:  # offloaded some, to a device the log does not name: the backend it loaded
        found = [backend_of(name) for name in described]
        return Offload(next((b for b in found if b), "gpu"), (), layers, total, tuple(fallback), tuple(evidence))
    return Offload(UNKNOWN, (), layers, total, tuple(fallback), tuple(evidence))


# --------------------------------------------------------------------- what was asked for

ALL = None  # --n-gpu-layers asked for every layer (a large number, a negative one, `auto`, `all`)
ALL_FROM = 999  # kitty-ops's default, and what llama.cpp's own examples pass for "every layer"


def asked_layers(argv: Sequence[str]) -> int | None:
    """The layers a server's command line asks the GPU for: the last --n-gpu-layers (any spelling),
    a number, or ALL for `all`, `auto` (llama.cpp's default: as many as fit), a negative number,
    999 or more, or no flag at all."""
    args = command.normalize_args(list(argv[1:]))
    values = [args[i + 1] for i in range(len(args) - 1) if args[i] == "--n-gpu-layers"]
    if not values:
        return ALL
    try:
        asked = int(values[-1])
    except ValueError:
        return ALL  # auto | all
    return ALL if asked < 0 or asked >= ALL_FROM else asked


def _asked_words(asked: int | None) -> str:
    return "all layers" if asked is ALL else f"{asked} layer{'' if asked == 1 else 's'}"


def gpu_shortfall(found: Offload, asked: int | None) -> str | None:
    """Why a server that must run on the GPU (REQUIRE_GPU) does not, in the operator's words; None
    when it does: it fell back to the CPU, or offloaded fewer layers than asked (ALL: every layer
    of the model), or its log cannot show either."""
    if asked == 0:
        return "it asks for no GPU layers (--n-gpu-layers 0), so it runs on the CPU"
    if asked is not ALL and found.total and asked >= found.total:
        asked = ALL  # every layer the model has
    if found.backend == UNKNOWN:
        return ("its log does not say which device holds the model (no `offloaded N/M layers to GPU` "
                "or `model buffer size` line), so it cannot be shown to run on a GPU (current llama.cpp "
                "writes those lines at log verbosity 4, which kitty-ops asks for with "
                "LLAMA_ARG_LOG_VERBOSITY=4: leave -lv/--verbosity out of EXTRA_ARGS)")
    if found.backend == CPU:
        why = found.cpu_fallback[0] if found.cpu_fallback else (
            f"offloaded 0/{found.total} layers to the GPU" if found.total else "no layer on a GPU")
        return f"it runs on the CPU ({why}); asked for {_asked_words(asked)} on the GPU"
    if found.layers is not None and found.total:
        wanted = found.total if asked is ALL else asked
        if found.layers < wanted:
            return (f"it offloaded only {found.layers}/{found.total} layers to the GPU ({found.backend}); "
                    f"the rest runs on the CPU; asked for {_asked_words(asked)}")
    return None
