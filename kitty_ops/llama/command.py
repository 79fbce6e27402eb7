"""llama-server: settings -> argv, flag normalisation, and checks against the installed binary.

llama.cpp renames and re-shapes flags between builds (`--flash-attn` took no value, now takes
on|off|auto; `--no-webui` became `--no-ui`; `-fa` swallows the next argument). So the argv is built
from one canonical spelling, operator extras are normalised to it, and the result is checked
against what the installed binary's own `--help` lists before anything starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from kitty_ops.config import ServerSpec

# Alternative spellings -> the canonical long flag this module emits.
FLAG_ALIASES = {
    "-ngl": "--n-gpu-layers", "--ngl": "--n-gpu-layers", "--gpu-layers": "--n-gpu-layers",
    "-fa": "--flash-attn",
    "-c": "--ctx-size",
    "-t": "--threads",
    "-b": "--batch-size",
    "-ub": "--ubatch-size",
    "-np": "--parallel",
    "-a": "--alias",
    "-m": "--model",
    "-mm": "--mmproj",
}
# Flags whose value is optional in some builds; a bare one gets this value so that it does not
# swallow the next argument.
OPTIONAL_VALUE_FLAGS = {"--flash-attn": ("on", {"on", "off", "auto"})}
# Flags whose value is a secret: masked whenever an argv is shown.
SECRET_FLAGS = {"--api-key", "--hf-token", "-hft"}
# Flags kitty-ops owns: an EXTRA_ARGS entry repeating one of these is a configuration error.
MANAGED_FLAGS = {"--model", "--host", "--port", "--alias", "--mmproj"}

_HELP_FLAG_RE = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def normalize_flag(token: str) -> str:
    """One spelling for one flag: aliases mapped, underscores in long flags turned into dashes."""
    if token.startswith("--") and "_" in token:
        token = token.replace("_", "-")
    return FLAG_ALIASES.get(token, token)


def normalize_args(args: list[str] | tuple[str, ...]) -> list[str]:
    """Normalise operator-given arguments: `--flag=value`/`-f=value` split (llama.cpp takes neither),
    flag spellings unified, a bare `--flash-attn` given its value."""
    out: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        token = items[i]
        if token.startswith("-") and "=" in token and not is_number(token):
            flag, value = token.split("=", 1)
            items[i + 1:i + 1] = [value]
            token = flag
        if token.startswith("-") and not is_number(token):
            token = normalize_flag(token)
            if token in OPTIONAL_VALUE_FLAGS:
                default, allowed = OPTIONAL_VALUE_FLAGS[token]
                following = items[i + 1] if i + 1 < len(items) else None
                if following is None or following.lower() not in allowed:
                    out.extend([token, default])
                    i += 1
                    continue
        out.append(token)
        i += 1
    return out


def is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def build_argv(spec: ServerSpec, binary: str) -> list[str]:
    """The full command line for one server. A list, never a shell string."""
    argv = [
        binary,
        "--model", str(spec.model),
        "--host", spec.bind,
        "--port", str(spec.port),
        "--alias", spec.alias,
        "--ctx-size", str(spec.ctx),
        "--threads", str(spec.threads),
        "--batch-size", str(spec.batch),
        "--ubatch-size", str(spec.ubatch),
        "--parallel", str(spec.parallel),
        "--n-gpu-layers", str(spec.n_gpu_layers),
        "--flash-attn", spec.flash_attn,
    ]
    if spec.jinja:
        argv.append("--jinja")
    if spec.metrics:
        argv.append("--metrics")
    if spec.mmproj is not None:
        argv += ["--mmproj", str(spec.mmproj)]
    extras = normalize_args(spec.extra_args)
    return _without_flags(argv, set(flags_in(["x", *extras]))) + extras


# Generated flags that take no value; every other generated flag is followed by exactly one.
_BARE_FLAGS = {"--jinja", "--metrics"}


def _without_flags(argv: list[str], drop: set[str]) -> list[str]:
    """argv minus the generated flags (and their values) that the operator's extras set again:
    the operator's value wins and the server sees each flag once."""
    out = [argv[0]]
    i = 1
    while i < len(argv):
        flag = argv[i]
        width = 1 if flag in _BARE_FLAGS else 2
        if flag not in drop:
            out.extend(argv[i:i + width])
        i += width
    return out


def flags_in(argv: list[str]) -> list[str]:
    """The flags (not values) of an argv, in order, without the binary."""
    return [t for t in argv[1:] if t.startswith("-") and not is_number(t)]


def managed_flags_in_extras(spec: ServerSpec) -> list[str]:
    return [f for f in flags_in(["x", *normalize_args(spec.extra_args)]) if f in MANAGED_FLAGS]


def redact(argv: list[str]) -> list[str]:
    """argv for display: the value after a secret flag is masked."""
    out = list(argv)
    for i, token in enumerate(out):
        if normalize_flag(token.split("=", 1)[0]) in SECRET_FLAGS:
            if "=" in token:
                out[i] = token.split("=", 1)[0] + "=***"
            elif i + 1 < len(out):
                out[i + 1] = "***"
    return out


def parse_help_flags(help_text: str) -> set[str]:
    """Every flag spelling an engine's `--help` lists. Options start their line in llama.cpp's
    help (`-ngl,  --gpu-layers, --n-gpu-layers N   description`); continuation lines are indented.
    Spellings are comma-separated and padding may follow a comma (`-m,    --model FNAME`)."""
    flags: set[str] = set()
    for line in help_text.splitlines():
        if not line.startswith("-"):
            continue
        for part in line.split(","):
            part = part.strip()
            match = _HELP_FLAG_RE.match(part)
            if not match:
                break
            flags.add(match.group(1))
            if re.search(r"\s{2,}", part):
                break  # the description starts in this part; later commas are prose
    return flags


def resolve_binary(binary: str) -> str | None:
    """Absolute path of the engine binary, or None when it is not there or not executable."""
    if os.sep in binary:
        path = Path(binary).expanduser()
        return str(path.resolve()) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(binary)


class EngineInfo:
    """What the installed binary says about itself: version line and accepted flags.

    Running `--help` takes a noticeable moment on some builds, so the answer is cached on disk,
    keyed by the binary's path, size and mtime: a new build invalidates it by itself.
    """

    def __init__(self, binary_path: str, version: str, flags: set[str]):
        self.binary_path = binary_path
        self.version = version
        self.flags = flags

    def unknown_flags(self, argv: list[str]) -> list[str]:
        if not self.flags:
            return []  # an engine whose help we could not parse: do not guess
        return [f for f in flags_in(argv) if f not in self.flags]

    @classmethod
    def probe(cls, binary_path: str, cache_dir: Path | None = None, timeout: float = 20.0) -> "EngineInfo":
        stat = os.stat(binary_path)
        key = hashlib.sha256(f"{binary_path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        cache = cache_dir / f"engine-{key}.json" if cache_dir else None
        if cache and cache.is_file():
            try:
                data = json.loads(cache.read_text())
                return cls(binary_path, data["version"], set(data["flags"]))
            except (ValueError, KeyError, OSError):
                pass  # a damaged cache is just re-made
        version = _run_capture([binary_path, "--version"], timeout)
        help_text = _run_capture([binary_path, "--help"], timeout)
        info = cls(binary_path, _version_line(version), parse_help_flags(help_text))
        if cache:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"version": info.version, "flags": sorted(info.flags)}))
                os.replace(tmp, cache)
            except OSError:
                pass  # caching is an optimisation only
        return info


def _run_capture(argv: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or "") + (done.stderr or "")


def _version_line(output: str) -> str:
    for line in output.splitlines():
        if line.lower().startswith("version:"):
            return line.split(":", 1)[1].strip()
    first = output.strip().splitlines()
    return first[0].strip() if first else "unknown"
