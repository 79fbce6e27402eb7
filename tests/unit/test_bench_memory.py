"""The bench's memory readers: a recorded `ioreg` of an Apple Silicon Mac, NVML through a fake
pynvml module (as nvidia-ml-py answers), and the sampler's peak and average."""

from __future__ import annotations

import sys
import time
import types

import pytest

from kitty_ops.bench import memory

# `ioreg -r -d 1 -w 0 -c IOAccelerator` on a Mac Studio (M3 Ultra) with a model loaded on Metal
# (trimmed: the registry keys between the ones kept are the same shape).
IOREG_M3_ULTRA = """\
+-o AGXAcceleratorG15X  <class AGXAcceleratorG15X, id 0x100000344, registered, matched, active, busy 0 (12 ms), retain 95>
    {
      "IOGLBundleName" = "AppleMetalOpenGLRenderer"
      "IOClass" = "AGXAcceleratorG15X"
      "CFBundleIdentifierKernel" = "com.apple.AGXG15X"
      "IOProviderClass" = "IOService"
      "IOPowerManagement" = {"ChildrenPowerState"=2,"DevicePowerState"=2,"CurrentPowerState"=2,"CapabilityFlags"=32768,"MaxPowerState"=2,"DriverPowerState"=0}
      "SchedulerState" = {"HWQueue0"={"kickCount"=12345,"enabled"=Yes}}
      "PerformanceStatistics" = {"In use system memory (driver)"=0,"Alloc system memory"=21474836480,"Tiler Utilization %"=3,"recoveryCount"=0,"lastRecoveryTime"=0,"Renderer Utilization %"=41,"TiledSceneBytes"=1048576,"Device Utilization %"=42,"SplitSceneCount"=0,"Allocated PB Size"=1572864,"In use system memory"=19327352832}
      "AGXParameterBufferMaxSize" = 1073741824
      "model" = "Apple M3 Ultra"
      "gpu-core-count" = 80
      "IOMatchedAtBoot" = Yes
    }
"""


def test_ioreg_gives_the_gpus_in_use_and_allocated_memory():
    assert memory.parse_ioreg(IOREG_M3_ULTRA) == {"in_use": 19327352832, "alloc": 21474836480}


def test_ioreg_without_an_accelerator_or_its_statistics_says_nothing():
    assert memory.parse_ioreg("") is None
    assert memory.parse_ioreg('+-o AGXAccelerator\n    {\n      "IOClass" = "AGX"\n    }\n') is None
    driver_only = '"PerformanceStatistics" = {"In use system memory (driver)"=5,"Alloc system memory"=7}'
    assert memory.parse_ioreg(driver_only) is None  # the driver's own figure is not the in-use one


def test_on_macos_the_gpu_is_read_from_ioreg_every_fifth_sample():
    calls = []

    def runner(argv, timeout):
        calls.append(tuple(argv))
        return IOREG_M3_ULTRA

    probe, note = memory.gpu_probe(123, system="Darwin", runner=runner)
    assert note == "" and probe.source == "ioreg" and probe.scope == "device" and probe.every == 5
    assert probe.read() == 19327352832
    assert calls[0] == memory.IOREG_ARGV and "sudo" not in calls[0]
    probe, note = memory.gpu_probe(123, system="Darwin", runner=lambda argv, timeout: None)
    assert probe is None and "ioreg" in note


def fake_pynvml(processes_supported: bool = True, devices: int = 2) -> types.ModuleType:
    """A stand-in for nvidia-ml-py's pynvml: two devices, our pid 4242 on the first."""
    module = types.ModuleType("pynvml")
    state = {"init": 0, "shutdown": 0}

    class NVMLError(Exception):
        pass

    def init():
        state["init"] += 1

    def running(handle):
        if not processes_supported:
            raise NVMLError("Not Supported")
        return [types.SimpleNamespace(pid=4242, usedGpuMemory=3 * 2**30)] if handle == 0 else \
            [types.SimpleNamespace(pid=999, usedGpuMemory=2**30), types.SimpleNamespace(pid=4242, usedGpuMemory=None)]

    module.NVMLError = NVMLError
    module.nvmlInit = init
    module.nvmlShutdown = lambda: state.__setitem__("shutdown", state["shutdown"] + 1)
    module.nvmlDeviceGetCount = lambda: devices
    module.nvmlDeviceGetHandleByIndex = lambda i: i
    module.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 * 2**30, used=(10 + h) * 2**30,
                                                                      free=0)
    module.nvmlDeviceGetComputeRunningProcesses = running
    module.state = state
    return module


def test_nvml_gives_the_servers_own_gpu_memory(monkeypatch):
    fake = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert memory.nvml_memory(fake, 4242) == (3 * 2**30, 21 * 2**30)
    probe, note = memory.gpu_probe(4242, system="Linux")
    assert note == "" and fake.state["init"] == 1
    assert (probe.source, probe.scope) == ("nvml", "process")
    assert probe.read() == 3 * 2**30
    probe.close()
    assert fake.state["shutdown"] == 1


def test_nvml_without_per_process_figures_falls_back_to_the_devices_used_memory(monkeypatch):
    fake = fake_pynvml(processes_supported=False)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    probe, _ = memory.gpu_probe(4242, system="Linux")
    assert probe.scope == "device" and probe.read() == 21 * 2**30


def test_without_pynvml_or_a_device_there_are_no_gpu_figures_and_the_bench_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    probe, note = memory.gpu_probe(1, system="Linux")
    assert probe is None and "pynvml is not installed" in note and "kitty-ops[nvidia]" in note
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(devices=0))
    probe, note = memory.gpu_probe(1, system="Linux")
    assert probe is None and "no device" in note
    broken = fake_pynvml()
    broken.nvmlInit = lambda: (_ for _ in ()).throw(broken.NVMLError("Driver Not Loaded"))
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    probe, note = memory.gpu_probe(1, system="Linux")
    assert probe is None and "Driver Not Loaded" in note


def test_the_sampler_keeps_every_sample_and_gives_peak_and_average():
    values = iter([100, 300, 200] + [200] * 1000)
    with memory.MemorySampler(1, interval=0.01, rss=lambda pid: next(values)) as sampler:
        time.sleep(0.08)
    stats = sampler.stats()
    assert stats.samples == len(sampler.samples) >= 4
    assert stats.rss_peak == 300 and stats.rss_peak >= stats.rss_avg > 0
    assert stats.gpu_peak is None and not sampler.gone
    assert [s.t for s in sampler.samples] == sorted(s.t for s in sampler.samples)


def test_the_sampler_notices_the_process_is_gone():
    with memory.MemorySampler(1, interval=0.01, rss=lambda pid: None, gpu_note="no GPU here") as sampler:
        time.sleep(0.03)
    assert sampler.gone
    stats = sampler.stats()
    assert stats.rss_peak is None and stats.note == "no GPU here"


def test_statistics_over_samples_are_pure():
    samples = [memory.Sample(0.0, 10, 5), memory.Sample(0.1, 30, None), memory.Sample(0.2, 20, 7)]
    stats = memory.memory_stats(samples, "nvml", "process")
    assert (stats.rss_peak, stats.rss_avg, stats.gpu_peak, stats.gpu_avg) == (30, 20, 7, 6)
    assert stats.gpu_source == "nvml" and memory.memory_stats([], "nvml", "process").gpu_source == ""


@pytest.mark.parametrize("system", ["Windows", "FreeBSD"])
def test_other_systems_have_no_gpu_reader(system):
    probe, note = memory.gpu_probe(1, system=system)
    assert probe is None and system in note
