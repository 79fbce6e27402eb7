"""gguf: header checks, versions, split models, sizes."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import gguf as gguf_pkg
import numpy as np
import pytest

from kitty_ops.llama import gguf
from kitty_ops.llama.gguf import ModelFileError, inspect


def write_with_gguf_package(path: Path, tensor: bool = True) -> Path:
    writer = gguf_pkg.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(128)
    if tensor:
        writer.add_tensor("tok_embd.weight", np.arange(16, dtype=np.float32).reshape(4, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    if tensor:
        writer.write_tensors_to_file()
    writer.close()
    return path


def header(version: int, magic: bytes = b"GGUF", pad: int = 24) -> bytes:
    return magic + struct.pack("<I", version) + b"\0" * pad


@pytest.mark.parametrize("tensor", [True, False], ids=["tensor", "metadata-only"])
def test_file_written_by_gguf_package_passes(tmp_path, tensor):
    path = write_with_gguf_package(tmp_path / "tiny.gguf", tensor=tensor)
    info = inspect(path)
    assert info.path == path
    assert info.version == 3
    assert info.shards == (path,)
    assert info.size_bytes == path.stat().st_size > 8


@pytest.mark.parametrize("version", [2, 3])
def test_supported_versions_by_hand(tmp_path, version):
    path = tmp_path / "m.gguf"
    path.write_bytes(header(version))
    assert inspect(path).version == version


def test_wrong_magic(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(header(3, magic=b"GGML"))
    with pytest.raises(ModelFileError) as caught:
        inspect(path)
    assert caught.value.path == path
    assert "not a GGUF file" in caught.value.message
    assert str(path) in str(caught.value)


def test_safetensors_like_content_is_not_gguf(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b'{"__metadata__": {}}' + b"\0" * 16)
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        inspect(path)


@pytest.mark.parametrize("version", [1, 99, 0])
def test_unsupported_versions(tmp_path, version):
    path = tmp_path / "m.gguf"
    path.write_bytes(header(version))
    with pytest.raises(ModelFileError) as caught:
        inspect(path)
    assert caught.value.message == f"unsupported GGUF version {version}"
    assert "re-convert" in caught.value.fix


@pytest.mark.parametrize("content", [b"", b"GG", b"GGUF\x03\x00\x00"])
def test_truncated(tmp_path, content):
    path = tmp_path / "m.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as caught:
        inspect(path)
    assert caught.value.message == f"too short to be GGUF ({len(content)} bytes)"


def test_missing_file(tmp_path):
    path = tmp_path / "absent.gguf"
    with pytest.raises(ModelFileError) as caught:
        inspect(path)
    assert caught.value.message == "file not found"
    assert caught.value.path == path


def test_directory(tmp_path):
    path = tmp_path / "dir.gguf"
    path.mkdir()
    with pytest.raises(ModelFileError) as caught:
        inspect(path)
    assert caught.value.message == "not a regular file"


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.gguf"
    path.write_bytes(header(3))
    path.chmod(0o000)
    try:
        if os.geteuid() != 0:
            # A real permission failure.
            with pytest.raises(ModelFileError) as caught:
                inspect(path)
        else:
            # root reads a 000 file anyway, so chmod proves nothing here: first confirm that,
            # then make the open fail the way it does for an ordinary user.
            assert inspect(path).version == 3
            real_open = Path.open

            def denied(self, *args, **kwargs):
                if self == path:
                    raise PermissionError(13, "Permission denied", str(self))
                return real_open(self, *args, **kwargs)

            monkeypatch.setattr(Path, "open", denied)
            with pytest.raises(ModelFileError) as caught:
                inspect(path)
    finally:
        path.chmod(0o644)
    assert caught.value.message == "not readable (permission denied)"
    assert f"chmod a+r {path}" in caught.value.fix


def test_other_read_error(tmp_path, monkeypatch):
    path = tmp_path / "bad-disk.gguf"
    path.write_bytes(header(3))

    def broken(self, *args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Path, "open", broken)
    with pytest.raises(ModelFileError) as caught:
        inspect(path)
    assert caught.value.message == "cannot be read (Input/output error)"


def make_split(directory: Path, stem: str, count: int, sizes: list[int] | None = None) -> list[Path]:
    paths = []
    for i in range(1, count + 1):
        path = directory / f"{stem}-{i:05d}-of-{count:05d}.gguf"
        pad = 24 if sizes is None else sizes[i - 1]
        path.write_bytes(header(3, pad=pad))
        paths.append(path)
    return paths


def test_split_shards_names():
    shards = gguf.split_shards(Path("/m/Llama-F16-00001-of-00003.gguf"))
    assert shards == (Path("/m/Llama-F16-00001-of-00003.gguf"),
                      Path("/m/Llama-F16-00002-of-00003.gguf"),
                      Path("/m/Llama-F16-00003-of-00003.gguf"))
    assert gguf.split_shards(Path("/m/model-q4.gguf")) is None


def test_complete_split_model_size_is_sum_of_shards(tmp_path):
    shards = make_split(tmp_path, "Llama-F16", 3, sizes=[100, 2000, 30])
    info = inspect(shards[0])
    assert info.shards == tuple(shards)
    assert info.size_bytes == sum(p.stat().st_size for p in shards) == 3 * 8 + 2130
    assert info.version == 3


def test_split_model_missing_shard_names_it(tmp_path):
    shards = make_split(tmp_path, "Llama-F16", 4)
    shards[2].unlink()
    with pytest.raises(ModelFileError) as caught:
        inspect(shards[0])
    assert "Llama-F16-00003-of-00004.gguf" in caught.value.message
    assert "missing 1 of 4" in caught.value.message
    assert "Llama-F16-00002-of-00004.gguf" not in caught.value.message


def test_split_model_pointing_at_shard_two(tmp_path):
    shards = make_split(tmp_path, "Llama-F16", 2)
    with pytest.raises(ModelFileError) as caught:
        inspect(shards[1])
    assert "not shard 1" in caught.value.message
    assert shards[0].name in caught.value.fix


def test_split_model_bad_later_shard(tmp_path):
    shards = make_split(tmp_path, "Llama-F16", 3)
    shards[2].write_bytes(b"junk")
    with pytest.raises(ModelFileError) as caught:
        inspect(shards[0])
    assert caught.value.path == shards[2]
