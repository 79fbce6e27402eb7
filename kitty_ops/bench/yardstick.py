"""The yardstick: llama.cpp's own `llama-bench` on the same model file and threads, so the
server's single-stream figures can be read against what the engine does with no HTTP, no slots
and no scheduler in between.

`llama-bench` is found beside the configured llama-server (LLAMACPP_SERVER_BIN, and beside the
file it links to: Homebrew's bin/ holds links into its Cellar), else on PATH. It runs
`-o json -p <prompt tokens> -n <max tokens> -r 2` with the server's threads, GPU layers, batch
sizes and flash attention, and `avg_ts` of its pp (prompt) and tg (generation) tests is read
from its JSON. Its tg figure generates from an empty context, the server's from after the
prompt: expect the server at or a little under 1.0x on generation.

It loads the model a second time (mmap: the same page cache, on a GPU a second copy of the
weights) and competes with the running server for the CPU: run it while the server is idle,
which the bench does (after its levels), and do not read the ratio on a machine that is busy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

from kitty_ops.llama import command

REPETITIONS = 2


@dataclasses.dataclass(frozen=True)
class Yardstick:
    pp_tps: float | None  # prompt processing, tokens/s (avg_ts of the pp test)
    pp_stddev: float | None
    tg_tps: float | None  # generation, tokens/s (avg_ts of the tg test)
    tg_stddev: float | None
    n_prompt: int | None
    n_gen: int | None
    build: str  # "<build_number> (<build_commit>)"
    threads: int | None
    backends: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_llama_bench(text: str) -> Yardstick:
    """llama-bench's `-o json` output -> its pp and tg figures. Raises ValueError when the
    output holds no JSON list of tests."""
    start = text.find("[")
    if start < 0:
        raise ValueError("no JSON list in llama-bench's output")
    tests = json.JSONDecoder().raw_decode(text[start:])[0]
    if not isinstance(tests, list) or not all(isinstance(t, dict) for t in tests):
        raise ValueError("llama-bench's JSON is not a list of tests")
    pp = next((t for t in tests if t.get("n_prompt", 0) > 0 and t.get("n_gen", 0) == 0), None)
    tg = next((t for t in tests if t.get("n_gen", 0) > 0 and t.get("n_prompt", 0) == 0), None)
    if pp is None and tg is None:
        raise ValueError("llama-bench's JSON has neither a pp nor a tg test")
    first = tests[0]
    build = f"{first.get('build_number', '?')} ({first.get('build_commit', '?')})"

    def figure(test: dict | None, key: str) -> float | None:
        return float(test[key]) if test is not None and isinstance(test.get(key), (int, float)) else None

    return Yardstick(figure(pp, "avg_ts"), figure(pp, "stddev_ts"), figure(tg, "avg_ts"), figure(tg, "stddev_ts"),
                     pp.get("n_prompt") if pp else None, tg.get("n_gen") if tg else None, build,
                     first.get("n_threads"), str(first.get("backends", "")))


def find_llama_bench(server_bin: str) -> str | None:
    """llama-bench beside the llama-server binary (or beside the file it links to), else on PATH."""
    resolved = command.resolve_binary(server_bin)
    places = []
    if resolved:
        places.append(Path(resolved).parent)
        real = Path(os.path.realpath(resolved)).parent
        if real not in places:
            places.append(real)
    for place in places:
        candidate = place / "llama-bench"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("llama-bench")


def flash_attn_args(help_text: str, flash_attn: str) -> list[str]:
    """`-fa` as this build of llama-bench takes it: on|off|auto (newer) or 0|1 (older)."""
    if "<on|off|auto>" in help_text:
        return ["-fa", flash_attn]
    if flash_attn in ("on", "off") and "-fa" in help_text:
        return ["-fa", "1" if flash_attn == "on" else "0"]
    return []


def argv(binary: str, model: str, threads: int, prompt_tokens: int, max_tokens: int, n_gpu_layers: int | None,
         batch: int | None, ubatch: int | None, flash: list[str]) -> list[str]:
    out = [binary, "-m", model, "-t", str(threads), "-p", str(prompt_tokens), "-n", str(max_tokens),
           "-r", str(REPETITIONS), "-o", "json"]
    if n_gpu_layers is not None:
        out += ["-ngl", str(n_gpu_layers)]
    if batch:
        out += ["-b", str(batch)]
    if ubatch:
        out += ["-ub", str(ubatch)]
    return out + flash


class YardstickError(Exception):
    pass


def run(binary: str, model: str, threads: int, prompt_tokens: int, max_tokens: int, timeout: float,
        n_gpu_layers: int | None = None, batch: int | None = None, ubatch: int | None = None,
        flash_attn: str | None = None) -> tuple[Yardstick, list[str]]:
    """Run llama-bench and parse it: (its figures, the argv it ran). Raises YardstickError."""
    flash: list[str] = []
    if flash_attn:
        help_text = _capture([binary, "--help"], 20.0)
        flash = flash_attn_args(help_text, flash_attn)
    args = argv(binary, model, threads, prompt_tokens, max_tokens, n_gpu_layers, batch, ubatch, flash)
    try:
        done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise YardstickError(f"llama-bench did not finish within {timeout:.0f}s (the bench's deadline)") from None
    except OSError as exc:
        raise YardstickError(f"cannot run {binary}: {exc}") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or "").strip().splitlines()[-3:])
        raise YardstickError(f"llama-bench exited with status {done.returncode}: {tail}")
    try:
        return parse_llama_bench(done.stdout), args
    except ValueError as exc:
        raise YardstickError(f"cannot read llama-bench's output: {exc}") from None


def _capture(args: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or "") + (done.stderr or "")
