"""kitty_ops.backup.parts.pipe: the one way backups run a command: streamed, bounded, argv only."""

from __future__ import annotations

import os
import time

from kitty_ops.backup.parts import pipe


def test_stdout_streams_to_the_sink_in_chunks_and_stdin_comes_from_a_file(tmp_path):
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    chunks: list[bytes] = []
    code, err, kept = pipe(["cat"], 30, chunks.append, stdin=source)
    assert (code, err, kept) == (0, "", b"")
    assert b"".join(chunks) == source.read_bytes()
    assert len(chunks) >= 3  # streamed, not read whole


def test_a_command_past_its_deadline_is_killed_and_reported_as_124():
    began = time.monotonic()
    code, err, _ = pipe(["sleep", "30"], 0.3)
    assert code == 124 and "did not finish within 0.3s" in err
    assert time.monotonic() - began < 5


def test_exit_code_and_stderr_are_kept_and_a_missing_command_is_127():
    code, err, out = pipe(["sh", "-c", "echo out; echo boom >&2; exit 3"], 10)
    assert (code, err.strip(), out) == (3, "boom", b"out\n")
    assert pipe(["kitty-ops-no-such-command"], 10)[0] == 127


def test_redis_info_parsing():
    from kitty_ops.backup.parts import keyspace_keys, parse_info

    text = "# Keyspace\r\ndb0:keys=12,expires=1,avg_ttl=0\r\ndb3:keys=5,expires=0,avg_ttl=0\r\n"
    info = parse_info(text)
    assert info == {"db0": "keys=12,expires=1,avg_ttl=0", "db3": "keys=5,expires=0,avg_ttl=0"}
    assert keyspace_keys(info) == 17
    assert keyspace_keys(parse_info("# Keyspace\r\n")) == 0
    assert parse_info("rdb_bgsave_in_progress:0\nrdb_last_bgsave_status:ok\n")["rdb_last_bgsave_status"] == "ok"
