"""kitty_ops.backup.manifest: names, path safety, hashing, listing and the retention plan (no Docker)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kitty_ops.backup.manifest import (
    MANIFEST,
    SCHEMA,
    BackupInfo,
    BadBackup,
    HashingWriter,
    check_hashes,
    list_backups,
    load,
    member,
    new_name,
    plan_prune,
    sha256_file,
)

NOW = datetime(2026, 11, 23, 18, 5, 1, tzinfo=timezone.utc)


def test_names_are_utc_timestamps_unique_and_labelled():
    assert new_name(NOW, []) == "20261123T180501Z"
    assert new_name(NOW, ["20261123T180501Z"]) == "20261123T180501Z-2"
    assert new_name(NOW, [".20261123T180501Z.partial"]) == "20261123T180501Z-2"  # one being written
    assert new_name(NOW, [], "pre-restore") == "20261123T180501Z-pre-restore"


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside", "objects/../../x", "", "a/../../b"])
def test_member_refuses_paths_outside_the_backup(tmp_path, bad):
    with pytest.raises(BadBackup):
        member(tmp_path, bad)


def test_member_refuses_a_symlink_out_and_accepts_a_plain_file(tmp_path):
    (tmp_path / "objects").mkdir()
    (tmp_path / "objects" / "abc").write_bytes(b"x")
    assert member(tmp_path, "objects/abc") == tmp_path / "objects" / "abc"
    (tmp_path / "link").symlink_to("/etc/hostname")
    with pytest.raises(BadBackup):
        member(tmp_path, "link")


def backup_dir(root: Path, name: str, files: dict[str, bytes], created: str = "2026-11-23T18:05:01+00:00") -> Path:
    path = root / name
    path.mkdir(parents=True)
    entries = []
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
        digest, size = sha256_file(path / rel)
        entries.append({"path": rel, "size": size, "sha256": digest, "kind": "test"})
    (path / MANIFEST).write_text(json.dumps({"schema": SCHEMA, "created_at": created, "parts": ["postgres"],
                                             "files": entries}))
    return path


def test_hashing_writer_matches_a_reread_and_creates_0600_exclusively(tmp_path):
    writer = HashingWriter(tmp_path / "dump")
    writer.write(b"PGDMP" + bytes(1000))
    digest, size = writer.close()
    assert (digest, size) == sha256_file(tmp_path / "dump")
    assert oct((tmp_path / "dump").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FileExistsError):
        HashingWriter(tmp_path / "dump")  # never overwrites


def test_check_hashes_catches_a_flipped_bit_a_truncation_and_a_missing_file(tmp_path):
    path = backup_dir(tmp_path, "20261123T180501Z", {"postgres.dump": b"PGDMP" + bytes(100), "env": b"A=1\n",
                                                      "redis.rdb": b"REDIS0011"})
    manifest = load(path)
    assert check_hashes(path, manifest) == []
    data = bytearray((path / "postgres.dump").read_bytes())
    data[50] ^= 0x04
    (path / "postgres.dump").write_bytes(bytes(data))
    (path / "env").write_bytes(b"A=")
    (path / "redis.rdb").unlink()
    problems = check_hashes(path, manifest)
    assert len(problems) == 3
    assert problems[0].startswith("postgres.dump: sha256")
    assert problems[1] == "env: 2 bytes, the manifest says 4"
    assert problems[2] == "redis.rdb: missing"


def test_check_hashes_reports_a_manifest_path_that_escapes(tmp_path):
    path = backup_dir(tmp_path, "20261123T180501Z", {"env": b"x"})
    manifest = load(path)
    manifest["files"].append({"path": "../../etc/passwd", "size": 1, "sha256": "0"})
    assert any("outside the backup" in p for p in check_hashes(path, manifest))


def test_load_refuses_what_is_not_a_manifest(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(BadBackup, match="no manifest.json"):
        load(tmp_path / "a")
    (tmp_path / "a" / MANIFEST).write_text('{"schema": "something/else", "files": []}')
    with pytest.raises(BadBackup, match="not a kitty-ops/backup/v1 manifest"):
        load(tmp_path / "a")


def test_list_backups_sorts_complete_ones_and_reports_leftovers(tmp_path):
    backup_dir(tmp_path, "20261124T000000Z", {"env": b"2"}, created="2026-11-24T00:00:00+00:00")
    backup_dir(tmp_path, "20261123T000000Z", {"env": b"1"}, created="2026-11-23T00:00:00+00:00")
    (tmp_path / ".20261125T000000Z.partial").mkdir()
    (tmp_path / "20261126T000000Z").mkdir()  # a backup name but no manifest
    (tmp_path / "notes").mkdir()  # not ours: ignored
    found = list_backups(tmp_path)
    assert [(b.name, b.complete) for b in found] == [
        ("20261123T000000Z", True), ("20261124T000000Z", True),
        (".20261125T000000Z.partial", False), ("20261126T000000Z", False)]
    assert found[0].size == 1 and found[0].parts == ("postgres",)
    assert list_backups(tmp_path / "nowhere") == []


def info(name: str, complete: bool = True) -> BackupInfo:
    return BackupInfo(name, Path(name), complete, created_at=name if complete else "")


def test_plan_prune_removes_the_oldest_complete_only():
    backups = [info("3"), info("1"), info("2"), info(".0.partial", False), info("4")]
    assert [b.name for b in plan_prune(backups, 2)] == ["1", "2"]
    assert plan_prune(backups, 4) == []
    assert plan_prune(backups, 0) == []  # 0 keeps everything
    assert [b.name for b in plan_prune(backups, 1)] == ["1", "2", "3"]
