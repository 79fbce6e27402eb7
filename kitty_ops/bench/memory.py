"""Memory while a bench level runs: the server's resident memory and, where the machine can say
without privileges, the GPU's.

`MemorySampler` is a context manager (as KITT's GPUMemoryTracker is): on entry a thread samples
about every 100 ms, on exit it stops; every sample is kept, and `stats()` gives peak and average.

- RSS: psutil, of the server's PID as its identity record proves it (the caller checks it is ours).
- GPU, Linux: NVML through `pynvml` (the `nvidia-ml-py` package: `pip install 'kitty-ops[nvidia]'`),
  imported only when a bench runs. The server process's own GPU memory when the driver reports
  it per process, else the device's used memory (then other programs' memory counts too).
  Without pynvml or a driver there are no GPU figures, and the bench says why.
- GPU, macOS: `ioreg -r -d 1 -w 0 -c IOAccelerator`, no sudo: the accelerator's
  PerformanceStatistics ("In use system memory", "Alloc system memory"). Apple Silicon's memory
  is unified and this figure is the GPU's for every process, not the server's alone. ioreg is a
  process start per reading, so it is read every fifth sample (about twice a second).

The readers of NVML's answers and of ioreg's text are pure functions, unit-tested with a fake
pynvml module and a recorded ioreg output.
"""

from __future__ import annotations

import dataclasses
import importlib
import platform
import re
import threading
import time
from typing import Callable, Sequence

from kitty_ops.host import procs
from kitty_ops.host.platform import run_command

INTERVAL = 0.1  # seconds between samples
IOREG_ARGV = ("ioreg", "-r", "-d", "1", "-w", "0", "-c", "IOAccelerator")


@dataclasses.dataclass(frozen=True)
class Sample:
    t: float  # seconds since the sampler started
    rss: int | None
    gpu: int | None


# ------------------------------------------------------------------------------ pure readers

_PERF_STATS = re.compile(r'"PerformanceStatistics"\s*=\s*\{([^}]*)\}')
_ENTRY = re.compile(r'"([^"]+)"\s*=\s*(-?\d+)')


def parse_ioreg(text: str) -> dict[str, int] | None:
    """`ioreg -r -d 1 -w 0 -c IOAccelerator` -> {"in_use": bytes, "alloc": bytes} summed over
    the accelerators listed (one on every Apple Silicon Mac); None when no accelerator reports
    "In use system memory"."""
    in_use = alloc = 0
    found = False
    for block in _PERF_STATS.findall(text):
        entries = {key: int(value) for key, value in _ENTRY.findall(block)}
        if "In use system memory" not in entries:
            continue
        found = True
        in_use += entries["In use system memory"]
        alloc += entries.get("Alloc system memory", 0)
    return {"in_use": in_use, "alloc": alloc} if found else None


def nvml_memory(nvml, pid: int) -> tuple[int | None, int | None]:
    """(this process's GPU memory, the devices' used memory) in bytes, over every NVIDIA device,
    read through an initialised pynvml module. The process figure is None when the driver does
    not report per-process memory (it says None, or the call is not supported: MIG, some
    virtual GPUs) or the process has none."""
    process: int | None = None
    device = 0
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        device += int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
        try:
            running = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except Exception:  # NVMLError_NotSupported and kin: no per-process figure here
            continue
        for proc in running:
            used = getattr(proc, "usedGpuMemory", None)
            if getattr(proc, "pid", None) == pid and isinstance(used, int):
                process = (process or 0) + used
    return process, device


# ------------------------------------------------------------------------------ GPU probes

class GpuProbe:
    """One GPU reading per call, in bytes (None when this reading failed)."""

    source = ""
    scope = ""  # "process" or "device"
    every = 1  # read at every n-th sample

    def read(self) -> int | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class NvmlProbe(GpuProbe):
    source = "nvml"

    def __init__(self, nvml, pid: int):
        self.nvml = nvml
        self.pid = pid
        process, _ = nvml_memory(nvml, pid)
        self.scope = "process" if process is not None else "device"

    def read(self) -> int | None:
        try:
            process, device = nvml_memory(self.nvml, self.pid)
        except Exception:
            return None
        return process if self.scope == "process" else device

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:
            pass


class IoregProbe(GpuProbe):
    source = "ioreg"
    scope = "device"
    every = 5

    def __init__(self, runner: Callable[[Sequence[str], float], str | None] = run_command):
        self.runner = runner

    def read(self) -> int | None:
        parsed = parse_ioreg(self.runner(IOREG_ARGV, 2.0) or "")
        return parsed["in_use"] if parsed else None


def gpu_probe(pid: int, system: str | None = None,
              import_module: Callable[[str], object] = importlib.import_module,
              runner: Callable[[Sequence[str], float], str | None] = run_command) -> tuple[GpuProbe | None, str]:
    """The GPU reader for this machine and why there is none: (probe, "") or (None, reason)."""
    system = system or platform.system()
    if system == "Darwin":
        probe = IoregProbe(runner)
        if probe.read() is None:
            return None, "no GPU memory figure: ioreg lists no IOAccelerator with PerformanceStatistics"
        return probe, ""
    if system != "Linux":
        return None, f"no GPU memory reader on {system}"
    try:
        nvml = import_module("pynvml")
    except ImportError:
        return None, "no GPU figures: pynvml is not installed (pip install 'kitty-ops[nvidia]' on an NVIDIA machine)"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # no driver, no device
        return None, f"no GPU figures: NVML did not start ({exc.__class__.__name__}: {exc})"
    try:
        if nvml.nvmlDeviceGetCount() == 0:
            nvml.nvmlShutdown()
            return None, "no GPU figures: NVML sees no device"
        return NvmlProbe(nvml, pid), ""
    except Exception as exc:
        return None, f"no GPU figures: NVML failed ({exc.__class__.__name__}: {exc})"


# ------------------------------------------------------------------------------ the sampler

@dataclasses.dataclass(frozen=True)
class MemoryStats:
    samples: int
    rss_peak: int | None
    rss_avg: int | None
    gpu_peak: int | None
    gpu_avg: int | None
    gpu_source: str = ""
    gpu_scope: str = ""
    note: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def memory_stats(samples: Sequence[Sample], gpu_source: str = "", gpu_scope: str = "", note: str = "") -> MemoryStats:
    rss = [s.rss for s in samples if s.rss is not None]
    gpu = [s.gpu for s in samples if s.gpu is not None]
    return MemoryStats(len(samples), max(rss) if rss else None, round(sum(rss) / len(rss)) if rss else None,
                       max(gpu) if gpu else None, round(sum(gpu) / len(gpu)) if gpu else None,
                       gpu_source if gpu else "", gpu_scope if gpu else "", note)


class MemorySampler:
    """with MemorySampler(pid) as sampler: ... ; sampler.stats(), sampler.samples, sampler.gone."""

    def __init__(self, pid: int, interval: float = INTERVAL, gpu: GpuProbe | None = None, gpu_note: str = "",
                 rss: Callable[[int], int | None] = procs.rss_bytes, clock: Callable[[], float] = time.monotonic):
        self.pid = pid
        self.interval = interval
        self.gpu = gpu
        self.gpu_note = gpu_note
        self.rss = rss
        self.clock = clock
        self.samples: list[Sample] = []
        self.gone = False  # the process could not be read any more (it exited)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._began = 0.0
        self._count = 0

    def sample(self) -> None:
        rss = self.rss(self.pid)
        if rss is None:
            self.gone = True
        gpu = None
        if self.gpu is not None and self._count % self.gpu.every == 0:
            gpu = self.gpu.read()
        self._count += 1
        self.samples.append(Sample(round(self.clock() - self._began, 4), rss, gpu))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "MemorySampler":
        self._began = self.clock()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(1.0, self.interval * 10))
        self.sample()

    def stats(self) -> MemoryStats:
        return memory_stats(self.samples, self.gpu.source if self.gpu else "", self.gpu.scope if self.gpu else "",
                            self.gpu_note)
