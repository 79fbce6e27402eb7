"""The one seam for what macOS and Linux answer differently: sysctl values, a process's start time
from `ps`, who listens on a port (`lsof`), the accelerator devices an engine can use, and a
durable fsync.

The reference machine is a Mac Studio, but the tests run on Linux. So every read that differs
goes through `Host`, whose command runner is injected: unit tests hand it recorded macOS outputs
(sysctl values, `ps -o lstart` lines, `lsof` listings) and check what kitty-ops makes of them.
Every command runs as an argv list under `LC_ALL=C` (BSD `ps` prints dates in the user's
locale otherwise) with a deadline; a command that is missing, fails or times out reads as None.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import platform as _platform
import re
import subprocess
from typing import Callable, Sequence

import psutil

# argv, timeout in seconds -> stdout, or None when the command is missing, failed or timed out.
Runner = Callable[[Sequence[str], float], "str | None"]

COMMAND_TIMEOUT = 5.0
ENGINE_TIMEOUT = 20.0  # --list-devices brings up every backend (Metal, CUDA) before it answers


def run_command(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> str | None:
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


@dataclasses.dataclass(frozen=True)
class EngineDevice:
    """One device llama-server can offload to, as its `--list-devices` prints it."""

    name: str  # "Metal" ("MTL0" in newer builds), "CUDA0", "Vulkan0"
    description: str  # "Apple M3 Ultra (196608 MiB, 180000 MiB free)"

    @property
    def is_metal(self) -> bool:
        return self.name == "Metal" or self.name.startswith("MTL")

    def __str__(self) -> str:
        return f"{self.name}: {self.description}"


_DEVICE_LINE = re.compile(r"^\s+([^\s:]+):\s*(.+?)\s*$")


def parse_devices(output: str) -> list[EngineDevice] | None:
    """`llama-server --list-devices` -> the devices under its "Available devices:" heading: [] for
    a CPU-only build (the heading, then "(none)" or nothing), None when the heading is missing."""
    lines = output.splitlines()
    for at, line in enumerate(lines):
        if line.strip() == "Available devices:":
            devices = []
            for match in map(_DEVICE_LINE.match, lines[at + 1:]):
                if not match:
                    break
                devices.append(EngineDevice(match[1], match[2]))
            return devices
    return None


def parse_lsof_listeners(output: str) -> list[tuple[int, str]]:
    """`lsof -nP -iTCP:PORT -sTCP:LISTEN` -> (pid, command) per listening process, each once (a
    process listening on IPv4 and IPv6 has two lines). The command is lsof's COMMAND column: cut
    to 9 characters on macOS, with spaces written as \\x20."""
    found: dict[int, str] = {}
    for line in output.splitlines()[1:]:  # the first line is the heading
        fields = line.split()
        if len(fields) >= 2 and fields[1].isdigit():
            found.setdefault(int(fields[1]), fields[0].replace("\\x20", " "))
    return list(found.items())


def full_fsync(fd: int) -> None:
    """Flush `fd` down to the storage. On macOS fsync(2) only hands the data to the drive, whose
    cache can still lose it on power loss; fcntl(F_FULLFSYNC) makes the drive write it out.
    Where the constant is missing (Linux, whose fsync already does that) or the file system
    refuses it, os.fsync."""
    full = getattr(fcntl, "F_FULLFSYNC", None)
    if full is not None:
        try:
            fcntl.fcntl(fd, full)
            return
        except OSError:
            pass
    os.fsync(fd)


@dataclasses.dataclass(frozen=True)
class Host:
    """This machine as kitty-ops needs to know it. `Host.current()` for the real one; tests build
    one with `system="Darwin"` and a runner that answers from recordings."""

    system: str  # platform.system(): "Darwin" or "Linux"
    run: Runner = run_command

    @classmethod
    def current(cls) -> "Host":
        return cls(_platform.system())

    @property
    def is_macos(self) -> bool:
        return self.system == "Darwin"

    def sysctl(self, name: str) -> str | None:
        """`sysctl -n NAME`, stripped; None where it does not exist (or not on macOS)."""
        if not self.is_macos:
            return None
        out = self.run(["sysctl", "-n", name], COMMAND_TIMEOUT)
        return out.strip() if out is not None and out.strip() else None

    def sysctl_int(self, name: str) -> int | None:
        value = self.sysctl(name)
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def total_memory(self) -> int:
        """Physical memory in bytes (hw.memsize on macOS)."""
        return self.sysctl_int("hw.memsize") or psutil.virtual_memory().total

    def apple_silicon(self) -> bool:
        """An Apple Silicon Mac, also when this Python runs under Rosetta (an Intel Homebrew
        Python), where platform.machine() says x86_64."""
        return self.sysctl_int("hw.optional.arm64") == 1

    def translated(self) -> bool:
        """This process runs under Rosetta 2."""
        return self.sysctl_int("sysctl.proc_translated") == 1

    def performance_cores(self) -> int | None:
        """llama.cpp's own default thread count on macOS: the performance cores (an M3 Ultra has 24,
        and 8 efficiency cores that os.cpu_count() counts too); hw.physicalcpu on a Mac without
        core levels. None elsewhere."""
        return self.sysctl_int("hw.perflevel0.physicalcpu") or self.sysctl_int("hw.physicalcpu")

    def listeners(self, port: int) -> list[tuple[int, str]]:
        """(pid, command) of the processes listening on TCP `port`, as lsof sees them: without root,
        only this user's processes. [] when lsof is missing or finds none (it exits 1 then)."""
        out = self.run(["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN"], COMMAND_TIMEOUT)
        return parse_lsof_listeners(out) if out else []

    def engine_devices(self, binary: str) -> list[EngineDevice] | None:
        """The devices the llama-server `binary` can offload to (`--list-devices`): [] for a
        CPU-only build, None when it does not answer."""
        out = self.run([binary, "--list-devices"], ENGINE_TIMEOUT)
        return parse_devices(out) if out is not None else None

    def gpu_working_set(self) -> int | None:
        """Bytes of memory Metal keeps resident for the GPU (its recommendedMaxWorkingSetSize),
        which what llama.cpp offloads must fit; None on anything but an Apple Silicon Mac.

        `sysctl iogpu.wired_limit_mb`, when non-zero, is the limit. At 0, macOS's default applies,
        which Apple does not document; the rule here is the one measured and commonly cited (e.g.
        the recommendedMaxWorkingSetSize llama.cpp logs: 147456 MB on a 192 GiB Mac, 49152 MB on
        64 GiB, 21845 MB on 32 GiB): 3/4 of RAM above 36 GiB, 2/3 up to it. Newer macOS releases
        have been seen to allow somewhat more, so the rule errs low; setting the sysctl makes it
        exact."""
        if not self.apple_silicon():
            return None
        wired_mb = self.sysctl_int("iogpu.wired_limit_mb")
        if wired_mb is not None and wired_mb > 0:
            return wired_mb * 2**20
        memory = self.total_memory()
        return memory * 3 // 4 if memory > 36 * 2**30 else memory * 2 // 3
