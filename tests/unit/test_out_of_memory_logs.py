"""Out-of-memory in a log tail: a server that dies saying so points at the out-of-memory runbook,
both when `start` sees it die (llama.lifecycle) and when `health` finds it dead (health.judge).
The lines are llama.cpp's own, on Metal, CUDA, Vulkan and the CPU."""

from __future__ import annotations

import time
import types

from kitty_ops.health import judge
from kitty_ops.host import procs, records
from kitty_ops.host.observe import Observed
from kitty_ops.llama import lifecycle
from kitty_ops.runbooks import Runbook

METAL_OOM = (
    "ggml_metal_graph_compute: command buffer 0 failed with status 5",
    "error: Insufficient Memory (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)",
)
OUT_OF_MEMORY = {
    "metal-command-buffer": METAL_OOM,
    "metal-working-set": ("ggml_backend_metal_log_allocated_size: warning: current allocated size "
                          "is greater than the recommended max working set size",),
    "metal-buffer": ("ggml_backend_metal_buffer_type_alloc_buffer: error: failed to allocate "
                     "buffer, size = 73728.00 MiB",),
    "cuda": ("CUDA error: out of memory", "  current device: 0, in function ggml_cuda_op"),
    "vulkan": ("terminate called after throwing an instance of 'vk::OutOfDeviceMemoryError'",
               "  what():  vk::Device::allocateMemory: ErrorOutOfDeviceMemory"),
    "cpu": ("ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 85899345920",),
}
NOT_OUT_OF_MEMORY = {
    # Status 5 is any command buffer error; this one is a GPU timeout.
    "metal-timeout": ("ggml_metal_graph_compute: command buffer 0 failed with status 5",
                      "error: Caused GPU Timeout Error (00000002:kIOGPUCommandBufferCallbackErrorTimeout)"),
    # "oom" inside a word is no OOM; nor is the working set Metal reports at every start.
    "bloom-assert": ("llama_model_loader: loaded meta data from /models/bloom-7b1.gguf",
                     "ggml_metal_init: recommendedMaxWorkingSetSize  = 147456.00 MB",
                     "GGML_ASSERT(n_tokens > 0) failed"),
}
CASES = {**{name: (lines, Runbook.OUT_OF_MEMORY) for name, lines in OUT_OF_MEMORY.items()},
         **{name: (lines, Runbook.SERVER_CRASH) for name, lines in NOT_OUT_OF_MEMORY.items()}}


def misrouted(runbook_for) -> list[str]:
    """The cases whose lines `runbook_for` sends to the wrong runbook (every case is checked, so
    one failure lists them all)."""
    routed = {name: runbook_for(lines) for name, (lines, _) in CASES.items()}
    return [f"{name}: {routed[name].value}, not {runbook.value}"
            for name, (_, runbook) in CASES.items() if routed[name] is not runbook]


def test_health_of_a_dead_server():
    def runbook_for(lines: tuple[str, ...]) -> Runbook:
        record = records.EngineRecord(
            name="f16", pid=4242, create_time=time.time() - 30, cmdline=["llama-server"],
            argv=["llama-server"], port=8082, url="http://127.0.0.1:8082", model="/m/f16.gguf",
            mmproj=None, engine_version="version: 6500", binary="/bin/llama-server",
            log="/l/llamacpp-f16.log", log_offset=0, started_at=time.time() - 30)
        seen = Observed("f16", record, liveness=procs.Liveness.GONE, log_tail=lines)
        return judge.from_process(seen, "llama", "kitty-f16", True, None, Runbook.SERVER_CRASH).runbook

    assert misrouted(runbook_for) == []


def test_start_of_a_server_that_died_while_loading(tmp_path):
    log = tmp_path / "llamacpp-f16.log"
    spec = types.SimpleNamespace(name="f16", port=8082, url="http://127.0.0.1:8082")

    def runbook_for(lines: tuple[str, ...]) -> Runbook:
        log.write_text("".join(f"{line}\n" for line in ("loading model", *lines)))
        outcome = lifecycle._failure(spec, 4242, 3.0, "exited while loading (exited with status 1)",
                                     log, 0, Runbook.SERVER_CRASH)
        assert outcome.log_tail == records.tail(log, lifecycle.LOG_TAIL_LINES)
        return outcome.runbook

    assert misrouted(runbook_for) == []
