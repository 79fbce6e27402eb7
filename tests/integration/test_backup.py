"""Backup and restore against the real engine: real postgres and redis in the stack's containers,
an S3-compatible server (moto) on loopback standing in for the object store (RustFS or MinIO), and
the CLI as operators run it.

The round trip writes rows, keys and objects, backs up, destroys the volumes and the buckets,
restores into a fresh stack and compares everything. The move from MinIO to RustFS is a backup
from one moto server and a restore into another.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.harness import free_port, wait_until

pytestmark = pytest.mark.docker

ROWS, KEYS = 300, 60
OBJECTS = {("artifacts", "models/readme.txt"): b"kitty artifacts\n",
           ("artifacts", "cad/part-7.stl"): bytes(range(256)) * 400,
           ("artifacts", "../../escape-attempt"): b"a key is never a path\n",
           ("images", "2026/11/cat.png"): b"\x89PNG\r\n\x1a\n" + os.urandom(5000),
           ("images", "same-bytes-twice"): b"kitty artifacts\n"}


class S3:
    def __init__(self, url: str):
        self.url = url
        self.client = boto3.client("s3", endpoint_url=url, aws_access_key_id="kitty",
                                   aws_secret_access_key="test-only-objects", region_name="us-east-1",
                                   config=Config(s3={"addressing_style": "path"}))

    def fill(self) -> None:
        for bucket in sorted({b for b, _ in OBJECTS}):
            self.client.create_bucket(Bucket=bucket)
        for (bucket, key), body in OBJECTS.items():
            self.client.put_object(Bucket=bucket, Key=key, Body=body)

    def everything(self) -> dict[tuple[str, str], bytes]:
        found = {}
        for bucket in [b["Name"] for b in self.client.list_buckets()["Buckets"]]:
            for item in self.client.list_objects_v2(Bucket=bucket).get("Contents", []):
                found[(bucket, item["Key"])] = self.client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found

    def wipe(self) -> None:
        for bucket in [b["Name"] for b in self.client.list_buckets()["Buckets"]]:
            for item in self.client.list_objects_v2(Bucket=bucket).get("Contents", []):
                self.client.delete_object(Bucket=bucket, Key=item["Key"])
            self.client.delete_bucket(Bucket=bucket)


@contextlib.contextmanager
def moto_server():
    """An S3 endpoint of its own on loopback, gone afterwards."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: _answers(url), 30), "moto_server did not start"
        yield S3(url)
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def s3():
    with moto_server() as endpoint:
        yield endpoint


def _answers(url: str) -> bool:
    import urllib.request
    try:
        urllib.request.urlopen(url + "/moto-api/", timeout=1)
        return True
    except OSError:
        return False


def backup_env(stack, s3: S3, **extra) -> Path:
    backups = stack.root / "backups"
    stack.stack_env({"q4": ""}, profiles="", **{"KITTY_BACKUP_DIR": backups, "KITTY_BACKUP_S3_URL": s3.url, **extra})
    return backups


def psql(stack, sql: str) -> str:
    done = stack.compose("exec", "-T", "postgres", "psql", "-U", "kitty", "-d", "kitty", "-v", "ON_ERROR_STOP=1",
                         "-tAc", sql)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def redis(stack, *args: str) -> str:
    done = stack.compose("exec", "-T", "redis", "redis-cli", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def fill(stack, s3: S3) -> None:
    psql(stack, "CREATE TABLE jobs (id int PRIMARY KEY, name text, payload bytea)")
    psql(stack, f"INSERT INTO jobs SELECT g, 'job-' || g, sha256(g::text::bytea) FROM generate_series(1, {ROWS}) g")
    pipe = "".join(f"SET key:{i} value-{i * 7}\n" for i in range(KEYS))
    done = subprocess.run(["docker", "exec", "-i", f"{stack.compose_project}-redis-1", "redis-cli"], input=pipe,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    s3.fill()


def state(stack, s3: S3) -> dict:
    return {"rows": psql(stack, "SELECT count(*), sum(id), md5(string_agg(name || encode(payload, 'hex'), ',' "
                                "ORDER BY id)) FROM jobs"),
            "keys": {k: redis(stack, "GET", k) for k in sorted(redis(stack, "--scan").split())},
            "objects": s3.everything(),
            "env": stack.env_file.read_bytes()}


def modes(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): oct(p.stat().st_mode & 0o777) for p in [path, *sorted(path.rglob("*"))]}


def test_round_trip_restores_rows_keys_objects_and_env_after_the_volumes_are_destroyed(stack, s3):
    backups = backup_env(stack, s3)
    assert stack.run("start", timeout=180).returncode == 0
    fill(stack, s3)
    before = state(stack, s3)
    assert before["rows"].startswith(f"{ROWS}|") and len(before["keys"]) == KEYS and len(before["objects"]) == 5

    code, out = stack.json("backup", timeout=300)
    assert code == 0, out
    path = Path(out["path"])
    assert path.parent == backups and not path.name.startswith(".")
    # 0700 directories, 0600 files: the dump and .env hold secrets.
    assert {m for name, m in modes(path).items() if (path / name).is_dir() or name == "."} == {"0o700"}
    assert {m for name, m in modes(path).items() if (path / name).is_file()} == {"0o600"}
    assert oct(backups.stat().st_mode & 0o777) == "0o700"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["parts"] == ["postgres", "redis", "objects", "env"]
    for entry in manifest["files"]:  # the manifest's sha256 is the file's
        assert hashlib.sha256((path / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert manifest["redis"]["keys"] == KEYS
    assert len(manifest["objects"]["objects"]) == 5
    assert len([f for f in manifest["files"] if f["kind"] == "object"]) == 4  # identical bytes stored once
    assert "test-only-pg" not in (path / "manifest.json").read_text()
    assert stack.run("verify-backup", timeout=120).returncode == 0

    # Disaster: containers and volumes gone, buckets gone.
    assert stack.run("stop", timeout=120).returncode == 0
    offline = stack.json("verify-backup", timeout=120)  # the stack is down: hashes and host tools
    assert offline[0] == 0, offline[1]
    assert {s["name"]: s["ok"] for s in offline[1]["steps"]} == {"sha256": True, "postgres": True, "redis": True,
                                                                 "objects": True, "env": True}
    assert stack.compose("down", "--volumes", timeout=120).returncode == 0
    s3.wipe()
    assert stack.run("start", timeout=180).returncode == 0
    assert psql(stack, "SELECT to_regclass('jobs') IS NULL") == "t"

    done = stack.run("restore", "--yes", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert state(stack, s3) == before
    assert not (stack.root / "escape-attempt").exists() and not (backups.parent / "escape-attempt").exists()
    listed = json.loads(stack.run("list-backups", "--json").stdout)["backups"]
    assert [b["name"].endswith("-pre-restore") for b in listed] == [False, True]
    assert all(b["complete"] for b in listed)
    assert "restore ok" in done.stdout and "pre-restore" in done.stdout


def test_a_corrupted_backup_is_refused_and_nothing_changes(stack, s3):
    backup_env(stack, s3, KITTY_BACKUP_PARTS="postgres,redis")
    assert stack.run("start", timeout=180).returncode == 0
    fill(stack, s3)
    code, out = stack.json("backup", timeout=300)
    assert code == 0, out
    dump = Path(out["path"]) / "postgres.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    dump.write_bytes(bytes(data))
    psql(stack, "INSERT INTO jobs VALUES (100000, 'written after the backup', NULL)")

    verified = stack.run("verify-backup")
    assert verified.returncode == 1
    assert "postgres.dump: sha256" in verified.stderr and "ops/runbooks/backup-restore.md" in verified.stderr
    refused = stack.run("restore", "--yes", timeout=120)
    assert refused.returncode == 1 and "refusing to restore" in refused.stderr
    assert psql(stack, "SELECT count(*) FROM jobs") == str(ROWS + 1)  # untouched
    assert [b["name"] for b in json.loads(stack.run("list-backups", "--json").stdout)["backups"]] == [out["path"].rsplit("/", 1)[1]]


def test_a_backup_that_fails_halfway_leaves_nothing_that_looks_complete(stack, s3):
    backups = backup_env(stack, s3)
    assert stack.run("start", timeout=180).returncode == 0
    fill(stack, s3)
    # postgres and redis succeed, then the S3 endpoint is gone.
    text = stack.env_file.read_text().replace(f"KITTY_BACKUP_S3_URL={s3.url}",
                                              f"KITTY_BACKUP_S3_URL=http://127.0.0.1:{free_port()}")
    stack.env_file.write_text(text)
    done = stack.run("backup", timeout=300)
    assert done.returncode == 1
    assert "objects" in done.stderr and "KITTY_BACKUP_S3_URL" in done.stderr
    assert "nothing kept" in done.stderr
    assert list(backups.iterdir()) == []  # no directory at all, complete-looking or not
    assert stack.run("verify-backup").returncode == 1


def test_restore_without_yes_and_without_a_terminal_refuses_before_touching_anything(stack, s3):
    backup_env(stack, s3, KITTY_BACKUP_PARTS="postgres")
    assert stack.run("start", timeout=180).returncode == 0
    psql(stack, "CREATE TABLE marker (v int)")
    assert stack.run("backup", timeout=120).returncode == 0
    psql(stack, "INSERT INTO marker VALUES (1)")
    done = stack.run("restore", timeout=60)
    assert done.returncode == 2
    assert "refusing to restore without --yes" in done.stderr
    assert psql(stack, "SELECT count(*) FROM marker") == "1"


def test_keep_prunes_only_the_oldest_complete_backups(stack, s3):
    backups = backup_env(stack, s3, KITTY_BACKUP_PARTS="redis")
    assert stack.run("start", timeout=180).returncode == 0
    leftover = backups / ".20200101T000000Z.partial"  # an interrupted backup: never pruned
    leftover.mkdir(parents=True)
    names = []
    for _ in range(3):
        code, out = stack.json("backup", "--keep", "2", timeout=120)
        assert code == 0, out
        names.append(Path(out["path"]).name)
        time.sleep(1.1)  # distinct timestamps
    remaining = sorted(p.name for p in backups.iterdir())
    assert remaining == sorted([leftover.name, *names[1:]])
    assert out["pruned"] == [names[0]]  # the third backup pruned the first
    listing = stack.run("list-backups").stdout
    assert "INCOMPLETE" in listing and names[2] in listing


def test_postgres_through_a_database_url_round_trips_and_keeps_its_password_out_of_the_manifest(stack, s3):
    ports = stack.stack_env({"q4": ""}, profiles="")
    backups = stack.root / "backups"
    with stack.env_file.open("a") as handle:
        handle.write(f"KITTY_BACKUP_DIR={backups}\nKITTY_BACKUP_PARTS=postgres\n"
                     f"KITTY_BACKUP_DATABASE_URL=postgresql://kitty:test-only-pg@127.0.0.1:{ports['POSTGRES_PORT']}/kitty\n")
    assert stack.run("start", timeout=180).returncode == 0
    psql(stack, "CREATE TABLE viaurl (v int); INSERT INTO viaurl VALUES (42)")
    code, out = stack.json("backup", timeout=120)
    assert code == 0, out
    manifest = json.loads((Path(out["path"]) / "manifest.json").read_text())
    assert manifest["postgres"]["source"] == "KITTY_BACKUP_DATABASE_URL"
    assert manifest["postgres"]["toc_entries"] >= 2  # the table and its data
    assert "test-only-pg" not in json.dumps(manifest)
    assert stat.S_IMODE(Path(out["path"]).stat().st_mode) == 0o700
    psql(stack, "DELETE FROM viaurl")
    assert stack.run("restore", "--yes", timeout=300).returncode == 0
    assert psql(stack, "SELECT v FROM viaurl") == "42"


def test_moving_from_minio_to_rustfs_is_a_backup_there_and_a_restore_of_the_objects_here(stack, s3):
    """ops/runbooks/backup-restore.md, "Moving from MinIO to RustFS", step by step. Two moto servers
    stand in for the two products' S3 APIs: `s3` for MinIO (objects in two buckets), `new` for the
    RustFS that starts empty."""
    backups = backup_env(stack, s3, KITTY_OBJECT_STORE="minio")
    assert stack.run("start", timeout=180).returncode == 0
    assert f"{stack.compose_project}-minio-1" in stack.containers(all_states=False)
    s3.fill()
    code, out = stack.json("backup", timeout=300)  # 1. a backup while MinIO runs
    assert code == 0, out
    name = Path(out["path"]).name
    assert stack.run("stop", timeout=120).returncode == 0  # 2. the stack down, switched, RustFS alone up
    with moto_server() as new:
        text = stack.env_file.read_text().replace("KITTY_OBJECT_STORE=minio", "KITTY_OBJECT_STORE=rustfs")
        stack.env_file.write_text(text.replace(f"KITTY_BACKUP_S3_URL={s3.url}", f"KITTY_BACKUP_S3_URL={new.url}"))
        started = stack.run("start", "--only", "rustfs", timeout=180)
        assert started.returncode == 0, started.stdout + started.stderr
        assert stack.containers(all_states=False) == [f"{stack.compose_project}-rustfs-1"]
        assert new.everything() == {}

        # 3. the objects restored into the new store; the switched env file stays as it is.
        done = subprocess.run(stack.argv("restore", name, "--yes", "--json"), cwd=stack.root,
                              env={**stack.env(), "KITTY_BACKUP_PARTS": "objects"}, capture_output=True,
                              text=True, timeout=600, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stdout + done.stderr
        steps = {s["name"]: s for s in json.loads(done.stdout)["steps"]}
        assert new.everything() == OBJECTS  # every key of both buckets, byte for byte
        assert s3.everything() == OBJECTS  # the old store is only read
    assert steps["objects"]["ok"] and steps["objects"]["detail"].startswith("5 objects in 2 buckets")
    assert "not restored" in steps["env"]["detail"] and "KITTY_OBJECT_STORE=rustfs" in stack.env_file.read_text()
    assert "stop writers" not in steps  # the store being restored into is no writer: it keeps running
    assert steps["start"]["ok"] and f"{stack.compose_project}-postgres-1" in stack.containers(all_states=False)
    assert [b.name.endswith("-pre-restore") for b in sorted(backups.iterdir())] == [False, True]
