"""Model files: is it there, is it GGUF, which version, are all split shards present, how big,
and the shape that sizes its KV cache.

The checks read only the 8-byte header, so checking a 70B model costs the same as checking a
tiny one. The shape comes from the metadata key/value section that follows the header: a few
numbers among the tokenizer's arrays, which are skipped by seeking past them, never loaded. The
read stops where the metadata ends (the tensor table follows) and gives up beyond
METADATA_LIMIT bytes, so a damaged or hostile file cannot make it read gigabytes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
from pathlib import Path
from typing import BinaryIO, Callable

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


# --------------------------------------------------------------------------- metadata (shape)

ARCH_KEY = "general.architecture"
# Keys under `<architecture>.` that size the KV cache (llama.cpp's LLM_KV_* names).
SHAPE_KEYS = ("context_length", "block_count", "embedding_length", "attention.head_count",
              "attention.head_count_kv", "attention.key_length", "attention.value_length")
# Metadata is mostly the tokenizer: ~10 MiB for a 256k-token vocabulary. Beyond this, give up.
METADATA_LIMIT = 64 * 2**20
# GGUF value types -> struct format of one value; 8 (string) and 9 (array) are read apart.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}
_STRING, _ARRAY = 8, 9
_SKIP_CHUNK = 2**16  # how far the vocabulary walk reads ahead


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """What sizes a model's KV cache, from its GGUF metadata."""

    architecture: str
    context_length: int | None  # the training context: what llama-server uses for --ctx-size 0
    block_count: int  # repeating layers
    kv_heads: tuple[int, ...]  # KV heads of each layer (0 for a hybrid model's recurrent layers)
    key_length: int  # per head
    value_length: int


def read_shape(path: Path) -> ModelShape | None:
    """The KV-cache shape of the model at `path` (shard 1 of a split model holds the metadata);
    None when its metadata does not describe attention layers (a projector, a damaged
    conversion). Raises ModelFileError when the metadata cannot be read."""
    return shape_from(read_metadata(
        path, lambda key: key == ARCH_KEY or key.split(".", 1)[-1] in SHAPE_KEYS))


def shape_from(metadata: dict[str, object]) -> ModelShape | None:
    """Pure: the shape from metadata values, with llama.cpp's defaults for the optional keys
    (KV heads = heads; key and value length = embedding length / heads)."""
    arch = metadata.get(ARCH_KEY)
    if not isinstance(arch, str):
        return None

    def value(name: str) -> object:
        return metadata.get(f"{arch}.{name}")

    layers, embedding = value("block_count"), value("embedding_length")
    if not isinstance(layers, int) or layers <= 0 or not isinstance(embedding, int):
        return None
    heads = _per_layer(value("attention.head_count"), layers)
    kv_heads = _per_layer(value("attention.head_count_kv") or value("attention.head_count"), layers)
    if heads is None or kv_heads is None or not any(heads):
        return None
    head_size = embedding // next(h for h in heads if h)
    key_length, value_length = value("attention.key_length"), value("attention.value_length")
    context = value("context_length")
    return ModelShape(
        architecture=arch,
        context_length=context if isinstance(context, int) and context > 0 else None,
        block_count=layers,
        kv_heads=kv_heads,
        key_length=key_length if isinstance(key_length, int) else head_size,
        value_length=value_length if isinstance(value_length, int) else head_size,
    )


def _per_layer(value: object, layers: int) -> tuple[int, ...] | None:
    """A count given once for all layers or as one number per layer -> one per layer."""
    if isinstance(value, int) and value >= 0:
        return (value,) * layers
    if (isinstance(value, tuple) and len(value) == layers
            and all(isinstance(v, int) and v >= 0 for v in value)):
        return value
    return None


def read_metadata(path: Path, wanted: Callable[[str], bool],
                  limit: int = METADATA_LIMIT) -> dict[str, object]:
    """The metadata values whose keys `wanted` accepts (numbers and strings as Python values,
    arrays as tuples); every other value is skipped unread. Raises ModelFileError for a file
    that is not GGUF, a truncated or damaged metadata section, or one longer than `limit`."""
    read_header(path)
    try:
        with path.open("rb") as handle:
            return _MetadataReader(path, handle, limit).read(wanted)
    except OSError as exc:
        raise ModelFileError(path, f"cannot be read ({exc.strerror})", "check the disk") from None


class _MetadataReader:
    """One pass over the metadata section, counting every byte read or skipped against the limit."""

    def __init__(self, path: Path, handle: BinaryIO, limit: int):
        self.path, self.handle, self.limit = path, handle, limit
        self.size = os.fstat(handle.fileno()).st_size
        self.pos = 0

    def read(self, wanted: Callable[[str], bool]) -> dict[str, object]:
        _magic, _version, _tensors, count = struct.unpack("<4sIQQ", self._take(24))
        values: dict[str, object] = {}
        for _ in range(count):
            key = self._take(self._length()).decode("utf-8", "replace")
            kind = self._scalar("I")
            if wanted(key):
                values[key] = self._value(kind)
            else:
                self._skip(kind)
        return values

    def _value(self, kind: int) -> object:
        if kind in _SCALARS:
            return self._scalar(_SCALARS[kind])
        if kind == _STRING:
            return self._take(self._length()).decode("utf-8", "replace")
        if kind == _ARRAY:
            item, count = self._scalar("I"), self._length()
            if item in _SCALARS:
                fmt = _SCALARS[item]
                return struct.unpack(f"<{count}{fmt}", self._take(count * struct.calcsize(fmt)))
            return tuple(self._value(item) for _ in range(count))
        raise self._damaged(f"its metadata has an unknown value type {kind}")

    def _skip(self, kind: int) -> None:
        if kind in _SCALARS:
            self._advance(struct.calcsize(_SCALARS[kind]))
        elif kind == _STRING:
            self._advance(self._length())
        elif kind == _ARRAY:
            item, count = self._scalar("I"), self._length()
            if item in _SCALARS:
                self._advance(count * struct.calcsize(_SCALARS[item]))
            elif item == _STRING:
                self._skip_strings(count)
            else:
                for _ in range(count):
                    self._skip(item)
        else:
            raise self._damaged(f"its metadata has an unknown value type {kind}")

    def _skip_strings(self, count: int) -> None:
        """Skip `count` strings (a vocabulary: 262k of them in Gemma 3) walking their lengths in
        chunks read into memory; a read and a seek per string would take most of a second."""
        chunk, at = b"", 0
        while count:
            if len(chunk) - at < 8:
                left = min(self.size, self.limit) - self.pos
                if left <= 0:
                    raise self._damaged("its metadata is truncated")
                chunk = chunk[at:] + self._take(min(_SKIP_CHUNK, left))
                at = 0
                continue
            (length,) = struct.unpack_from("<Q", chunk, at)
            ends = at + 8 + length
            if ends <= len(chunk):
                at = ends
            else:  # a string longer than what is in memory: skip its rest on disk
                self._advance(ends - len(chunk))
                chunk, at = b"", 0
            count -= 1
        unused = len(chunk) - at  # read ahead past the last string: give it back
        self.handle.seek(-unused, os.SEEK_CUR)
        self.pos -= unused

    def _scalar(self, fmt: str) -> int:
        return struct.unpack(f"<{fmt}", self._take(struct.calcsize(fmt)))[0]

    def _length(self) -> int:
        """A string length or array count, refused when it cannot fit in what is left to read."""
        length = self._scalar("Q")
        self._reserve(length)
        return length

    def _take(self, n: int) -> bytes:
        self._reserve(n)
        data = self.handle.read(n)
        self.pos += len(data)
        if len(data) < n:
            raise self._damaged("its metadata is truncated")
        return data

    def _advance(self, n: int) -> None:
        self._reserve(n)
        self.handle.seek(n, os.SEEK_CUR)
        self.pos += n

    def _reserve(self, n: int) -> None:
        """Refuse to read or skip past the end of the file or beyond the limit."""
        if self.pos + n > min(self.size, self.limit):
            raise self._damaged("its metadata is truncated" if self.pos + n > self.size else
                                f"its metadata is longer than the {self.limit // 2**20} MiB "
                                "kitty-ops reads")

    def _damaged(self, message: str) -> ModelFileError:
        return ModelFileError(self.path, message,
                              "fetch the file again if it is damaged; until its metadata reads, "
                              "its KV cache is left out of the memory budget")
