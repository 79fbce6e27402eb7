"""records: atomic 0600 writes, save/load round trip, bad records, log tails."""

from __future__ import annotations

import json
import stat

import pytest

from kitty_ops.host import records
from kitty_ops.host.procs import Identity
from kitty_ops.host.records import BadRecord, EngineRecord


def make_record(name: str = "q4", **changes) -> EngineRecord:
    values = dict(
        name=name, pid=4242, create_time=1700000000.25,
        cmdline=["/usr/bin/llama-server", "--port", "8083"],
        argv=["llama-server", "--model", "/m/q4.gguf", "--port", "8083", "--flash-attn", "on"],
        port=8083, url="http://127.0.0.1:8083", model="/m/q4.gguf", mmproj=None,
        engine_version="6130 (abc)", binary="/usr/bin/llama-server",
        log="/p/.logs/llamacpp-q4.log", log_offset=123, started_at=1700000001.5,
    )
    values.update(changes)
    return EngineRecord(**values)


def mode_of(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_atomic_creates_0600_and_no_temp_file(tmp_path):
    target = tmp_path / "deep" / "dir" / "file.json"
    records.write_atomic(target, "hello\n")
    assert target.read_text() == "hello\n"
    assert mode_of(target) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]


def test_write_atomic_replaces_and_resets_mode(tmp_path):
    target = tmp_path / "file.pid"
    target.write_text("old")
    target.chmod(0o644)
    records.write_atomic(target, "new")
    assert target.read_text() == "new"
    assert mode_of(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["file.pid"]


def test_write_atomic_custom_mode(tmp_path):
    target = tmp_path / "f"
    records.write_atomic(target, "x", mode=0o640)
    assert mode_of(target) == 0o640


def test_write_atomic_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "file.json"
    target.write_text("old")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records.os, "replace", fail)
    with pytest.raises(OSError):
        records.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_save_load_round_trip(tmp_path):
    logs = tmp_path / ".logs"
    record = make_record(mmproj="/m/proj.gguf")
    records.save(logs, record)
    assert records.load(logs, "q4") == record
    assert records.bare_pid(logs, "q4") == 4242
    for path in (records.record_path(logs, "q4"), records.pid_path(logs, "q4")):
        assert mode_of(path) == 0o600
    data = json.loads(records.record_path(logs, "q4").read_text())
    assert data["schema"] == records.RECORD_SCHEMA
    assert data["flags"] == ["--model", "--port", "--flash-attn"]
    assert sorted(p.name for p in logs.iterdir()) == ["llamacpp-q4.json", "llamacpp-q4.pid"]


def test_identity_uses_argv_without_binary():
    record = make_record()
    assert record.identity == Identity(4242, 1700000000.25, tuple(record.argv[1:]))


def test_load_missing_is_none(tmp_path):
    assert records.load(tmp_path, "q4") is None
    assert records.bare_pid(tmp_path, "q4") is None


@pytest.mark.parametrize("content", [
    b"not json at all {",
    b"",
    b"\xff\xfe\x00garbage",
    b'{"name": "q4", "pid": 1}',  # fields missing
])
def test_load_garbage_raises_bad_record(tmp_path, content):
    records.record_path(tmp_path, "q4").write_bytes(content)
    with pytest.raises(BadRecord) as caught:
        records.load(tmp_path, "q4")
    assert "llamacpp-q4.json" in str(caught.value)


@pytest.mark.parametrize("content", [b"[1, 2, 3]", b"42", b'"text"', b"null"])
def test_load_json_that_is_not_an_object_raises_bad_record(tmp_path, content):
    records.record_path(tmp_path, "q4").write_bytes(content)
    with pytest.raises(BadRecord):
        records.load(tmp_path, "q4")


def test_load_ignores_unknown_keys(tmp_path):
    record = make_record()
    data = {**record.as_dict(), "future_field": 1}
    records.record_path(tmp_path, "q4").write_text(json.dumps(data))
    assert records.load(tmp_path, "q4") == record


def test_remove_and_recorded_names(tmp_path):
    records.save(tmp_path, make_record("q4"))
    records.save(tmp_path, make_record("f16"))
    records.write_atomic(records.pid_path(tmp_path, "orphan"), "99\n")
    assert records.recorded_names(tmp_path) == ["f16", "orphan", "q4"]
    records.remove(tmp_path, "q4")
    records.remove(tmp_path, "never-there")
    assert records.recorded_names(tmp_path) == ["f16", "orphan"]


def test_bare_pid_garbage(tmp_path):
    records.pid_path(tmp_path, "q4").write_text("twelve\n")
    assert records.bare_pid(tmp_path, "q4") is None


def test_tail_last_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert records.tail(log, lines=3) == ["line 97", "line 98", "line 99"]
    assert records.tail(log, lines=0) == []


def test_tail_from_offset(tmp_path):
    log = tmp_path / "x.log"
    first_run = "old 1\nold 2\nold 3\n"
    log.write_text(first_run + "new 1\nnew 2\n")
    offset = len(first_run.encode())
    assert records.tail(log, lines=20, offset=offset) == ["new 1", "new 2"]
    assert records.tail(log, lines=1, offset=offset) == ["new 2"]
    assert records.tail(log, lines=20, offset=offset + 1000) == []


def test_tail_reads_at_most_max_bytes(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("a" * 1000 + "\nlast\n")
    assert records.tail(log, lines=5, max_bytes=10) == ["aaaa", "last"]


def test_tail_missing_and_undecodable(tmp_path):
    assert records.tail(tmp_path / "missing.log") == []
    log = tmp_path / "bin.log"
    log.write_bytes(b"ok\n\xff\xfe broken\n")
    assert records.tail(log) == ["ok", "\ufffd\ufffd broken"]
