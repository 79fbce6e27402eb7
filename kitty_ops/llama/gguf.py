"""Model files: is it there, is it GGUF, which version, are all split shards present, how big.

Only the 8-byte header is read, so checking a 70B model costs the same as checking a tiny one.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # version 1 files predate llama.cpp's current loader
SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


class ModelFileError(Exception):
    """A model file that llama-server would refuse. The message names the file and the cause."""

    def __init__(self, path: Path, message: str, fix: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
        self.fix = fix


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    path: Path
    version: int
    shards: tuple[Path, ...]  # every file of a split model, shard 1 first; just `path` otherwise
    size_bytes: int  # all shards together


def read_header(path: Path) -> int:
    """Return the GGUF version of `path`, or raise ModelFileError saying what is wrong."""
    if not path.exists():
        raise ModelFileError(path, "file not found", "check the path, or download the model")
    if not path.is_file():
        raise ModelFileError(path, "not a regular file", "point the variable at the .gguf file")
    try:
        with path.open("rb") as handle:
            header = handle.read(8)
    except PermissionError:
        raise ModelFileError(path, "not readable (permission denied)",
                             f"chmod a+r {path}, or run as its owner") from None
    except OSError as exc:
        raise ModelFileError(path, f"cannot be read ({exc.strerror})", "check the disk") from None
    if len(header) < 8:
        raise ModelFileError(path, f"too short to be GGUF ({len(header)} bytes)",
                             "the download is incomplete: fetch the file again")
    if header[:4] != MAGIC:
        raise ModelFileError(path, f"not a GGUF file (starts with {header[:4]!r})",
                             "use a .gguf model; convert other formats with llama.cpp's converter")
    (version,) = struct.unpack("<I", header[4:8])
    if version not in SUPPORTED_VERSIONS:
        raise ModelFileError(path, f"unsupported GGUF version {version}",
                             f"use a GGUF version {' or '.join(map(str, SUPPORTED_VERSIONS))} file "
                             "(re-convert it with a current llama.cpp)")
    return version


def split_shards(path: Path) -> tuple[Path, ...] | None:
    """For NAME-0000K-of-0000N.gguf, every shard's path in order; None if not a split name."""
    match = SPLIT_RE.match(path.name)
    if not match:
        return None
    count = int(match["count"])
    width = len(match["index"])
    return tuple(
        path.with_name(f"{match['stem']}-{i:0{width}d}-of-{match['count']}.gguf")
        for i in range(1, count + 1)
    )


def inspect(path: Path) -> ModelInfo:
    """Check a model (all shards of a split one). Raises ModelFileError on the first bad file."""
    shards = split_shards(path)
    if shards is None:
        version = read_header(path)
        return ModelInfo(path, version, (path,), path.stat().st_size)
    if path != shards[0]:
        raise ModelFileError(path, "is not shard 1 of its split model",
                             f"point the variable at {shards[0].name}: llama-server loads the "
                             "other shards from the first")
    missing = [s.name for s in shards if not s.exists()]
    if missing:
        raise ModelFileError(path, f"split model is missing {len(missing)} of {len(shards)} "
                             f"shards: {', '.join(missing)}",
                             "download the missing shards into the same directory")
    version = read_header(shards[0])
    for shard in shards[1:]:
        read_header(shard)
    return ModelInfo(path, version, shards, sum(s.stat().st_size for s in shards))
