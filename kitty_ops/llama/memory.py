"""Memory: will the enabled servers fit, and does a log say that one did not.

Pure, so the arithmetic is tested with recorded numbers; validate.py reads the numbers (model
sizes, GGUF shapes, the machine's memory, Metal's working set) and hands them over.

A server needs its model files plus its KV cache. On Linux both are budgeted against physical
memory. On a Mac with Apple Silicon, CPU and GPU share that memory, but Metal keeps only its
working set (`recommendedMaxWorkingSetSize`, well below RAM) resident for the GPU: what a server
offloads (all of it at the default N_GPU_LAYERS=999) must fit there too, or a command buffer
fails with kIOGPUCommandBufferCallbackErrorOutOfMemory while the model loads or at the first
long prompt.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Iterable, Sequence

from kitty_ops.config import ServerSpec
from kitty_ops.llama import command
from kitty_ops.llama.gguf import ModelShape
from kitty_ops.problems import Problem, warning
from kitty_ops.runbooks import Runbook

GIB = 2**30
MIB = 2**20
# Bytes per cached element of each KV cache type (ggml block size / 32 elements for the quants).
CACHE_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32,
                    "q5_0": 22 / 32, "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32}
DEFAULT_CACHE_TYPE = "f16"
CACHE_TYPE_FLAGS = {"k": ("--cache-type-k", "-ctk"), "v": ("--cache-type-v", "-ctv")}
# Memory left to macOS itself: a raised wired limit is never suggested closer to RAM than this.
MACOS_RESERVE = 8 * GIB


@dataclasses.dataclass(frozen=True)
class Need:
    """One server's memory: its files, its KV cache, and how much of both it offloads to the GPU."""

    name: str
    var_prefix: str
    weights: int  # model shards plus projector
    kv_cache: int  # 0 when the model's shape is unknown
    gpu_share: float  # 0 (no layers offloaded) .. 1 (all of them)

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache


def need(spec: ServerSpec, weights: int, shape: ModelShape | None) -> Need:
    """A server's need from its settings, its files' size and its model's shape (None: unknown)."""
    kv = 0 if shape is None else kv_cache_bytes(
        shape, spec.ctx, cache_type_bytes(spec.extra_args, "k"), cache_type_bytes(spec.extra_args, "v"))
    return Need(spec.name, spec.var_prefix, weights, kv, gpu_share(spec.n_gpu_layers, shape))


def kv_cache_bytes(shape: ModelShape, ctx: int, k_bytes: float, v_bytes: float) -> int:
    """The KV cache of one server: cells x (every layer's KV heads x (key + value length) x bytes).

    Cells = --ctx-size (the model's training context for 0), whatever --parallel is: llama-server
    divides the context among its slots (n_ctx_seq = n_ctx / n_seq, or one unified cache of
    n_ctx cells shared by all slots with --kv-unified); either way it allocates n_ctx cells in all
    (llama.cpp src/llama-context.cpp and tools/server). An upper bound for sliding-window models
    (Gemma 2/3, gpt-oss), whose window layers cache fewer cells.
    """
    cells = ctx or shape.context_length or 0
    per_head = shape.key_length * k_bytes + shape.value_length * v_bytes
    return math.ceil(cells * sum(shape.kv_heads) * per_head)


def cache_type_bytes(extra_args: Sequence[str], which: str) -> float:
    """Bytes per element of the K or V cache as the extra args set it (the last one wins, as in
    llama.cpp's argument parser); f16 when unset or unknown."""
    args = command.normalize_args(list(extra_args))
    values = [args[i + 1] for i in range(len(args) - 1) if args[i] in CACHE_TYPE_FLAGS[which]]
    chosen = values[-1].lower() if values else DEFAULT_CACHE_TYPE
    return CACHE_TYPE_BYTES.get(chosen, CACHE_TYPE_BYTES[DEFAULT_CACHE_TYPE])


def gpu_share(n_gpu_layers: int, shape: ModelShape | None) -> float:
    """The part of a server held by the GPU: --n-gpu-layers over the repeating layers plus the
    output layer (llama.cpp offloads that one last); negative means all."""
    if n_gpu_layers < 0:
        return 1.0
    if shape is None:
        return 1.0 if n_gpu_layers else 0.0
    return min(n_gpu_layers, shape.block_count + 1) / (shape.block_count + 1)


def budget(needs: Sequence[Need], physical: int, gpu_working_set: int | None) -> list[Problem]:
    """At most one warning: the servers exceed physical memory, or (on Apple Silicon, where
    `gpu_working_set` is given) what they offload exceeds Metal's working set."""
    weights = sum(n.weights for n in needs)
    kv = sum(n.kv_cache for n in needs)
    if weights + kv > physical:
        return [warning(
            "LLAMACPP_SERVERS", f"the enabled servers need {_gib(weights + kv)} ({_gib(weights)} "
            f"of model files + {_gib(kv)} of KV cache; {_breakdown(needs)}) but this machine has "
            f"{_gib(physical)} of memory", _shrink_fix(needs), Runbook.OUT_OF_MEMORY)]
    if gpu_working_set is None:
        return []
    on_gpu = math.ceil(sum(n.total * n.gpu_share for n in needs))
    if on_gpu <= gpu_working_set:
        return []
    raise_limit = math.ceil(on_gpu / GIB) * 1024  # MiB, rounded up to a whole GiB
    fix = _shrink_fix(needs)
    if raise_limit * MIB <= physical - MACOS_RESERVE:
        fix += (f"; or raise Metal's limit: sudo sysctl iogpu.wired_limit_mb={raise_limit} "
                "(until reboot)")
    return [warning(
        "LLAMACPP_SERVERS", f"the enabled servers put {_gib(on_gpu)} on the GPU ({_gib(weights)} "
        f"of model files + {_gib(kv)} of KV cache; {_breakdown(needs)}) but Metal's working set "
        f"is {_gib(gpu_working_set)} of this Mac's {_gib(physical)}; beyond it Metal fails with "
        "kIOGPUCommandBufferCallbackErrorOutOfMemory", fix, Runbook.OUT_OF_MEMORY)]


def _shrink_fix(needs: Sequence[Need]) -> str:
    """The ways to need less, naming the server with the biggest KV cache."""
    biggest = max(needs, key=lambda n: n.kv_cache)
    prefix = biggest.var_prefix if biggest.kv_cache else "LLAMACPP_<NAME>_"
    return (f"lower {prefix}CTX (the KV cache grows with it; PARALLEL slots share it), quantise "
            f"the KV cache ({prefix}EXTRA_ARGS=\"--cache-type-k q8_0 --cache-type-v q8_0\", "
            "with flash attention on), use smaller quantisations, or disable a server "
            "(LLAMACPP_<NAME>_ENABLED=false)")


def _breakdown(needs: Sequence[Need]) -> str:
    return ", ".join(f"{n.name} {n.weights / GIB:.1f}+{n.kv_cache / GIB:.1f}"
                     for n in sorted(needs, key=lambda n: -n.total)) + " GiB"


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


# ------------------------------------------------------------------------ out-of-memory logs

# How llama.cpp and the OS say that memory ran out: Linux and CUDA ("CUDA error: out of memory",
# "cudaMalloc failed"), Vulkan ("ErrorOutOfDeviceMemory"), every backend's "failed to allocate
# buffer", the kernel's OOM killer, and Metal: "error: Insufficient Memory
# (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)" after "command buffer 0 failed with
# status 5", and the load-time "current allocated size is greater than the recommended max
# working set size". Status 5 alone (MTLCommandBufferStatusError) is any GPU error, timeouts
# included, so the line after it decides.
_OUT_OF_MEMORY = re.compile(
    r"out[ _]?of[ _]?(device[ _]?)?memory|insufficient memory|(failed|unable|cannot) (to )?allocate"
    r"|cudamalloc failed|recommended max working set size|\boom\b",
    re.IGNORECASE)


def says_out_of_memory(lines: Iterable[str]) -> bool:
    """Whether log lines tell of memory running out (any platform, any backend)."""
    return any(_OUT_OF_MEMORY.search(line) for line in lines)
