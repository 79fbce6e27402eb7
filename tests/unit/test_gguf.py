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


# ------------------------------------------------------------------------ metadata: the shape

def write_model(path: Path, arch: str = "llama", layers: int = 80, heads: int | list[int] = 64,
                kv_heads: int | list[int] | None = 8, embedding: int = 8192,
                key_length: int | None = None, value_length: int | None = None,
                context: int = 131072, template: str = "{{ messages }}",
                tokens: int = 1000, tensor: bool = True) -> Path:
    """A GGUF file as a converter writes it: general.* keys, the architecture's keys, then the
    tokenizer's big arrays and chat template (real files put them after the shape, so the
    reader must skip them only when later keys follow; one shape key goes last to prove it)."""
    writer = gguf_pkg.GGUFWriter(str(path), arch)
    writer.add_name("test model")
    writer.add_block_count(layers)
    writer.add_embedding_length(embedding)
    writer.add_head_count(heads)
    if kv_heads is not None:
        writer.add_head_count_kv(kv_heads)
    if key_length is not None:
        writer.add_key_length(key_length)
    if value_length is not None:
        writer.add_value_length(value_length)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"token-{i}" for i in range(tokens)])
    writer.add_token_scores([0.0] * tokens)
    writer.add_chat_template(template)
    writer.add_context_length(context)
    if tensor:
        writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    if tensor:
        writer.write_tensors_to_file()
    writer.close()
    return path


def test_shape_of_a_70b_model_with_defaults_for_head_sizes(tmp_path):
    path = write_model(tmp_path / "llama-70b.gguf")
    shape = gguf.read_shape(path)
    assert shape == gguf.ModelShape(architecture="llama", context_length=131072, block_count=80,
                                    kv_heads=(8,) * 80, key_length=128, value_length=128)


def test_shape_with_explicit_head_sizes_and_per_layer_kv_heads(tmp_path):
    # A hybrid model: recurrent layers have no KV heads; key and value lengths given explicitly.
    path = write_model(tmp_path / "hybrid.gguf", arch="qwen3next", layers=4, heads=16,
                       kv_heads=[0, 0, 0, 2], embedding=2048, key_length=256, value_length=128)
    shape = gguf.read_shape(path)
    assert shape is not None
    assert (shape.architecture, shape.kv_heads) == ("qwen3next", (0, 0, 0, 2))
    assert (shape.key_length, shape.value_length) == (256, 128)


def test_kv_heads_default_to_heads_without_grouped_query_attention(tmp_path):
    shape = gguf.read_shape(write_model(tmp_path / "mha.gguf", layers=2, heads=32, kv_heads=None,
                                        embedding=4096))
    assert shape is not None and shape.kv_heads == (32, 32) and shape.key_length == 128


def test_files_without_attention_metadata_have_no_shape(tmp_path):
    assert gguf.read_shape(write_with_gguf_package(tmp_path / "tiny.gguf")) is None  # no heads
    bare = tmp_path / "bare.gguf"
    bare.write_bytes(header(3))  # no metadata at all, as the test harness writes
    assert gguf.read_shape(bare) is None


def test_skipped_values_are_never_read_into_memory(tmp_path, monkeypatch):
    path = write_model(tmp_path / "big-template.gguf", template="x" * (4 * 2**20), tokens=20000)
    assert path.stat().st_size > 4 * 2**20
    read_sizes: list[int] = []
    real_open = Path.open

    def counting_open(self, *args, **kwargs):
        handle = real_open(self, *args, **kwargs)
        real_read = handle.read

        def read(n=-1):
            data = real_read(n)
            read_sizes.append(len(data))
            return data

        handle.read = read
        return handle

    monkeypatch.setattr(Path, "open", counting_open)
    assert gguf.read_shape(path).context_length == 131072  # the key after the template
    assert max(read_sizes) <= gguf._SKIP_CHUNK  # the vocabulary is walked in bounded chunks
    assert sum(read_sizes) < 400_000  # tokens and keys, not the 4 MiB template


def test_metadata_beyond_the_limit_is_refused(tmp_path):
    path = write_model(tmp_path / "huge.gguf", template="x" * (2 * 2**20))
    with pytest.raises(ModelFileError) as caught:
        gguf.read_metadata(path, lambda key: True, limit=2**20)
    assert caught.value.message == "its metadata is longer than the 1 MiB kitty-ops reads"
    assert "left out of the memory budget" in caught.value.fix


def test_truncated_metadata_is_an_error(tmp_path):
    path = write_model(tmp_path / "cut.gguf", tensor=False)
    path.write_bytes(path.read_bytes()[:2000])  # ends inside the token list
    with pytest.raises(ModelFileError) as caught:
        gguf.read_shape(path)
    assert caught.value.message == "its metadata is truncated"
    assert caught.value.path == path


@pytest.mark.parametrize("body", [
    struct.pack("<QQ", 0, 2**60),  # claims 2**60 entries
    struct.pack("<QQQ", 0, 1, 2**62) + b"k",  # a key of 2**62 bytes
    struct.pack("<QQQ", 0, 1, 1) + b"k" + struct.pack("<IIQ", 9, 8, 2**61),  # 2**61 strings
], ids=["entries", "key-length", "array-count"])
def test_absurd_counts_fail_at_once(tmp_path, body):
    path = tmp_path / "hostile.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 3) + body)
    with pytest.raises(ModelFileError, match="truncated"):
        gguf.read_metadata(path, lambda key: True)


def test_wanted_values_are_returned_and_the_tensor_table_is_not_read(tmp_path):
    path = write_model(tmp_path / "m.gguf", layers=2, heads=[4, 4], kv_heads=2, embedding=64)
    values = gguf.read_metadata(path, lambda key: key.startswith(("general.", "llama.")))
    assert values["general.architecture"] == "llama"
    assert values["general.name"] == "test model"
    assert values["llama.attention.head_count"] == (4, 4)
    assert "tokenizer.ggml.tokens" not in values


def test_a_vocabulary_of_long_and_chunk_crossing_tokens_is_skipped_to_the_key_after_it(tmp_path):
    """The vocabulary walk reads ahead in chunks: strings that cross a chunk's end, or are longer
    than a chunk, must still land it exactly on the next key."""
    path = tmp_path / "odd-vocab.gguf"
    writer = gguf_pkg.GGUFWriter(str(path), "llama")
    writer.add_block_count(4)
    writer.add_embedding_length(256)
    writer.add_head_count(4)
    lengths = [1, 7, gguf._SKIP_CHUNK + 123, 3, 2 * gguf._SKIP_CHUNK, 5] + [i % 97 for i in range(30000)]
    writer.add_token_list(["x" * n for n in lengths])
    writer.add_context_length(4096)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    shape = gguf.read_shape(path)
    assert shape is not None and shape.context_length == 4096 and shape.block_count == 4
