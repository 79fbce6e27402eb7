"""The parts of the stack's state a backup holds, each able to dump, check and restore itself:
postgres (pg_dump -Fc), redis (an RDB snapshot), the objects of the S3 buckets (the object store:
RustFS or MinIO), and the env file.

Everything runs as argv lists: inside the compose service's container by its id (`docker exec`),
or for redis's files a one-off container of the same service (`docker compose run`); a shell
appears only as a constant script with the paths passed as its arguments. Every command has a
deadline. Large streams (a dump, an RDB, an object) go straight to disk, hashed on the way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from kitty_ops.backup.manifest import CHUNK, HashingWriter, member
from kitty_ops.config import Settings
from kitty_ops.containers.compose import Compose, ComposeError
from kitty_ops.host.records import write_atomic
from kitty_ops.runbooks import Runbook

POSTGRES_FILE = "postgres.dump"
REDIS_FILE = "redis.rdb"
ENV_FILE = "env"
OBJECTS_DIR = "objects"
QUICK = 30.0
# Runs in the redis container: checks a copied RDB (stdin) with the server's own checker.
CHECK_RDB = 'f=$(mktemp) && cat > "$f" && redis-check-rdb "$f"; rc=$?; rm -f "$f"; exit $rc'
# Runs in a one-off container of the redis service while redis is stopped: puts the RDB in place
# and removes the append-only files (rebuilt from the RDB afterwards when the service uses AOF).
PLACE_RDB = 'cat > "$1" && rm -rf "$2" "$3"'


class PartFailed(Exception):
    def __init__(self, part: str, message: str, runbook: Runbook = Runbook.BACKUP):
        super().__init__(f"{part}: {message}")
        self.part, self.runbook = part, runbook


class Unchecked(PartFailed):
    """No tool here can read the artifact (the hashes still vouch for it): a note, not a failure."""


class NotRunning(PartFailed):
    """The service's container is not running (a backup needs it; a verify can do without)."""


@dataclasses.dataclass
class Dumped:
    files: list[dict]  # manifest entries: path, size, sha256, kind
    info: dict  # what the manifest records of this part


def pipe(argv: list[str], timeout: float, sink: Callable[[bytes], object] | None = None,
         stdin: Path | None = None, env: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """Run argv; stdout to `sink` chunk by chunk (else returned), stdin from a file. Killed at
    the deadline (exit 124). Returns (exit code, stderr text, stdout when no sink)."""
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(argv, stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        except FileNotFoundError:
            return 127, f"{argv[0]}: command not found", b""
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
        reader.start()
        fired = threading.Event()
        timer = threading.Timer(timeout, lambda: (fired.set(), proc.kill()))
        timer.start()
        kept = bytearray()
        try:
            while chunk := proc.stdout.read(CHUNK):
                if sink is None:
                    kept += chunk
                else:
                    sink(chunk)
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(5)
        err = b"".join(errors).decode(errors="replace")
        if fired.is_set():
            return 124, f"did not finish within {timeout:g}s; {err}", bytes(kept)
        return code, err, bytes(kept)


def last_line(text: str) -> str:
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1][:300] if lines else "no output"


def _write_file(root: Path, name: str, kind: str, produce: Callable[[HashingWriter], None]) -> dict:
    writer = HashingWriter(root / name)
    try:
        produce(writer)
    finally:
        digest, size = writer.close()
    return {"path": name, "size": size, "sha256": digest, "kind": kind}


class _Container:
    """One compose service's running container, for docker exec."""

    def __init__(self, compose: Compose | None, service: str):
        self.compose, self.service = compose, service

    def id(self) -> str:
        if self.compose is None:
            raise NotRunning(self.service, "the container tier is disabled (KITTY_COMPOSE_ENABLED=false)",
                             Runbook.CONFIGURATION)
        try:
            cid = self.compose.container_ids().get(self.service)
        except ComposeError as exc:
            raise NotRunning(self.service, exc.problem.message, exc.problem.runbook) from None
        state = self.compose.inspect([cid]).get(self.service) if cid else None
        if not cid or state is None or state.status != "running":
            raise NotRunning(self.service, f"the {self.service} container is not running (start the stack "
                                           f"with start-all first)", Runbook.CONTAINER_FAILED)
        return cid

    def exec(self, argv: list[str], timeout: float = QUICK, **kwargs) -> tuple[int, str, bytes]:
        return pipe(["docker", "exec", "-i", self.id(), *argv], timeout, **kwargs)

    def text(self, argv: list[str], timeout: float = QUICK) -> str:
        code, err, out = self.exec(argv, timeout)
        if code != 0:
            raise PartFailed(self.service, f"`{' '.join(argv[:3])}` exited {code}: {last_line(err or out.decode())}")
        return out.decode(errors="replace").strip()


# ---------------------------------------------------------------------------------- postgres

class Postgres:
    name = "postgres"

    def __init__(self, settings: Settings, compose: Compose):
        self.settings, self.backup = settings, settings.backup
        self.container = _Container(compose, "postgres")

    def _local(self) -> tuple[list[str], dict[str, str]]:
        """pg_dump against KITTY_BACKUP_DATABASE_URL: its password goes through PGPASSWORD, never
        onto a command line that `ps` would show."""
        parts = urlsplit(self.backup.database_url)
        env = dict(os.environ)
        if parts.password:
            env["PGPASSWORD"] = parts.password
        netloc = (parts.username or "") + ("@" if parts.username else "") + (parts.hostname or "")
        if parts.port:
            netloc += f":{parts.port}"
        return ["--dbname", urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))], env

    def dump(self, root: Path) -> Dumped:
        timeout = self.backup.dump_timeout
        if self.backup.database_url:
            target, env = self._local()
            argv, version_argv = ["pg_dump", "-Fc", *target], ["pg_dump", "--version"]
            run = lambda sink: pipe(argv, timeout, sink, env=env)  # noqa: E731
            version = _version(version_argv)
        else:
            argv = ["pg_dump", "-Fc", "-U", self.backup.postgres_user, "-d", self.backup.postgres_db]
            run = lambda sink: self.container.exec(argv, timeout, sink=sink)  # noqa: E731
            version = self.container.text(["pg_dump", "--version"])
        result: dict = {}

        def produce(writer: HashingWriter) -> None:
            result["code"], result["err"], _ = run(writer.write)

        entry = _write_file(root, POSTGRES_FILE, "postgres", produce)
        if result["code"] != 0:
            raise PartFailed(self.name, f"pg_dump exited {result['code']}: {last_line(result['err'])}")
        entries = self.toc_entries(root / POSTGRES_FILE)
        return Dumped([entry], {"database": self.backup.postgres_db, "format": "custom",
                                "toc_entries": entries, "pg_dump": version,
                                "source": "KITTY_BACKUP_DATABASE_URL" if self.backup.database_url else "compose"})

    def toc_entries(self, path: Path) -> int:
        """`pg_restore --list` of the dump: proof it is readable; the number of its entries."""
        with path.open("rb") as handle:
            if handle.read(5) != b"PGDMP":
                raise PartFailed(self.name, f"{path.name} is not a pg_dump custom-format archive")
        local = ["pg_restore", "--list"]
        try:
            if self.backup.database_url:
                raise NotRunning(self.name, "the host's pg_restore reads dumps made with the host's pg_dump")
            code, err, out = self.container.exec(local, self.backup.dump_timeout, stdin=path)
        except NotRunning:  # verifying with the stack down: the host's pg_restore, when there is one
            code, err, out = pipe(local, self.backup.dump_timeout, stdin=path)
            if code == 127 or "unsupported version" in err:
                raise Unchecked(self.name, f"no pg_restore able to read it here ({last_line(err)}); "
                                           "start the stack to check it fully") from None
        if code != 0:
            raise PartFailed(self.name, f"pg_restore --list cannot read {path.name}: {last_line(err)}")
        return sum(1 for line in out.decode(errors="replace").splitlines() if line and not line.startswith(";"))

    def restore(self, path: Path) -> str:
        """Into the live database, in one transaction: any error rolls all of it back."""
        argv = ["pg_restore", "--clean", "--if-exists", "--single-transaction", "--exit-on-error"]
        if self.backup.database_url:
            target, env = self._local()
            code, err, _ = pipe([*argv, *target], self.backup.dump_timeout, stdin=path, env=env)
        else:
            code, err, _ = self.container.exec([*argv, "-U", self.backup.postgres_user, "-d", self.backup.postgres_db],
                                               self.backup.dump_timeout, stdin=path)
        if code != 0:
            raise PartFailed(self.name, f"pg_restore exited {code} (rolled back): {last_line(err)}")
        return f"database {self.backup.postgres_db} restored"


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=QUICK)
        return last_line(done.stdout or done.stderr)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


# ------------------------------------------------------------------------------------- redis

def parse_info(text: str) -> dict[str, str]:
    """`INFO <section>` -> {field: value} (comment lines and blanks skipped)."""
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def keyspace_keys(info: dict[str, str]) -> int:
    """Keys in every database of `INFO keyspace` (`db0: keys=12,expires=0,avg_ttl=0`)."""
    return sum(int(part.split("=", 1)[1]) for value in info.values() for part in value.split(",")
               if part.startswith("keys="))


class Redis:
    name = "redis"

    def __init__(self, settings: Settings, compose: Compose):
        self.settings, self.compose = settings, compose
        self.container = _Container(compose, "redis")

    def cli(self, *args: str) -> str:
        return self.container.text(["redis-cli", *args])

    def config(self, key: str) -> str:
        lines = self.cli("CONFIG", "GET", key).splitlines()
        return lines[1] if len(lines) > 1 else ""

    def info(self, section: str) -> dict[str, str]:
        return parse_info(self.cli("INFO", section))

    def keys(self) -> int:
        return keyspace_keys(self.info("keyspace"))

    def snapshot(self, timeout: float) -> int:
        """BGSAVE, then wait (up to `timeout`) until LASTSAVE moves past the time before it and
        the save reports ok. LASTSAVE counts whole seconds, so a save that ended in the current
        second is waited out first: the new one must be seen to be new."""
        before = int(self.cli("LASTSAVE"))
        wait = before + 1.05 - time.time()
        if wait > 0:
            time.sleep(wait)
        reply = self.cli("BGSAVE", "SCHEDULE")
        if "saving" not in reply.lower():
            raise PartFailed(self.name, f"BGSAVE refused: {reply}")
        deadline = time.monotonic() + timeout
        while True:
            info = self.info("persistence")
            if info.get("rdb_bgsave_in_progress") == "0" and int(self.cli("LASTSAVE")) > before:
                if info.get("rdb_last_bgsave_status") != "ok":
                    raise PartFailed(self.name, "BGSAVE failed (rdb_last_bgsave_status: "
                                                f"{info.get('rdb_last_bgsave_status')}); see the redis log")
                return int(self.cli("LASTSAVE"))
            if time.monotonic() > deadline:
                raise PartFailed(self.name, f"BGSAVE did not finish within {timeout:g}s (KITTY_BACKUP_REDIS_TIMEOUT)")
            time.sleep(0.05)

    def dump(self, root: Path) -> Dumped:
        saved = self.snapshot(self.settings.backup.redis_timeout)
        rdb = f"{self.config('dir')}/{self.config('dbfilename')}"
        result: dict = {}

        def produce(writer: HashingWriter) -> None:
            result["code"], result["err"], _ = self.container.exec(["cat", rdb], self.settings.backup.dump_timeout,
                                                                   sink=writer.write)

        entry = _write_file(root, REDIS_FILE, "redis", produce)
        if result["code"] != 0:
            raise PartFailed(self.name, f"copying {rdb} out failed: {last_line(result['err'])}")
        self.check(root / REDIS_FILE)
        return Dumped([entry], {"keys": self.keys(), "lastsave": saved,
                                "redis": self.info("server").get("redis_version", "unknown")})

    def check(self, path: Path) -> str:
        with path.open("rb") as handle:
            if handle.read(5) != b"REDIS":
                raise PartFailed(self.name, f"{path.name} is not an RDB file")
        try:
            code, err, out = self.container.exec(["sh", "-c", CHECK_RDB], QUICK, stdin=path)
        except NotRunning:  # verifying with the stack down: the host's checker, when there is one
            code, err, out = pipe(["redis-check-rdb", str(path)], QUICK)
            if code == 127:
                raise Unchecked(self.name, "no redis-check-rdb here; start the stack to check it fully") from None
        if code != 0:
            raise PartFailed(self.name, f"redis-check-rdb rejects {path.name}: {last_line(out.decode() or err)}")
        return last_line(out.decode(errors="replace"))

    def restore(self, path: Path, expected_keys: int | None) -> str:
        """Stop redis and put the RDB in place. Redis loads an RDB only when append-only mode is
        off (with it on and no AOF, it starts empty), so when the service runs with AOF a
        one-off redis on the same volume loads the RDB with AOF off, switches AOF on (which
        writes a fresh AOF of the loaded data) and shuts down. Then the service starts again
        and must come back with the expected keys."""
        directory, dbfilename = self.config("dir"), self.config("dbfilename")
        uses_aof = self.config("appendonly") == "yes"
        aof_dir = f"{directory}/{self.config('appenddirname') or 'appendonlydir'}"
        aof_file = f"{directory}/{self.config('appendfilename') or 'appendonly.aof'}"
        stopped = self.compose.compose("stop", "redis", timeout=QUICK + self.compose.settings.stop_timeout)
        if stopped.code != 0:
            raise PartFailed(self.name, f"cannot stop redis: {last_line(stopped.err)}")
        try:
            run = ("run", "--rm", "-T", "--no-deps")
            code, err, _ = pipe(self.compose.argv(*run, "--entrypoint", "sh", "redis", "-c", PLACE_RDB, "sh",
                                                  f"{directory}/{dbfilename}", aof_dir, aof_file),
                                self.settings.backup.dump_timeout, stdin=path, env=self.compose.environment())
            if code != 0:
                raise PartFailed(self.name, f"placing the RDB failed: {last_line(err)}")
            if uses_aof:
                self._rewrite_aof(directory, dbfilename, expected_keys)
        finally:
            started = self.compose.compose("start", "redis", timeout=QUICK)
        if started.code != 0:
            raise PartFailed(self.name, f"cannot start redis again: {last_line(started.err)}")
        loaded = self._wait_keys(lambda *args: self.cli(*args), expected_keys)
        return f"{loaded} keys loaded" + (" (AOF rewritten from them)" if uses_aof else "")

    def _rewrite_aof(self, directory: str, dbfilename: str, expected_keys: int | None) -> None:
        launched = self.compose.compose("run", "-d", "--no-deps", "--entrypoint", "redis-server", "redis",
                                        "--dir", directory, "--dbfilename", dbfilename, "--appendonly", "no",
                                        timeout=QUICK)
        if launched.code != 0:
            raise PartFailed(self.name, f"cannot start a one-off redis to load the RDB: {last_line(launched.err)}")
        one_off = last_line(launched.out)

        def cli(*args: str) -> str:
            code, err, out = pipe(["docker", "exec", one_off, "redis-cli", *args], QUICK)
            if code != 0:
                raise PartFailed(self.name, f"one-off redis: {last_line(err or out.decode())}")
            return out.decode(errors="replace").strip()

        try:
            self._wait_keys(cli, expected_keys)
            cli("CONFIG", "SET", "appendonly", "yes")
            deadline = time.monotonic() + self.settings.backup.redis_timeout
            while True:
                info = parse_info(cli("INFO", "persistence"))
                if (info.get("aof_enabled") == "1" and info.get("aof_rewrite_in_progress") == "0"
                        and info.get("aof_rewrite_scheduled") == "0"):
                    if info.get("aof_last_bgrewrite_status") != "ok":
                        raise PartFailed(self.name, "rewriting the AOF from the RDB failed; see the redis log")
                    break
                if time.monotonic() > deadline:
                    raise PartFailed(self.name, "the AOF rewrite did not finish within "
                                                f"{self.settings.backup.redis_timeout:g}s (KITTY_BACKUP_REDIS_TIMEOUT)")
                time.sleep(0.05)
            pipe(["docker", "exec", one_off, "redis-cli", "SHUTDOWN"], QUICK)
            pipe(["docker", "wait", one_off], QUICK)
        finally:
            pipe(["docker", "rm", "-f", one_off], QUICK)

    def _wait_keys(self, cli: Callable[..., str], expected: int | None) -> int:
        """Until redis answers with the expected number of keys (it loads the dataset first)."""
        deadline = time.monotonic() + self.settings.backup.redis_timeout
        last = "no answer"
        while True:
            try:
                if cli("PING") == "PONG":
                    keys = keyspace_keys(parse_info(cli("INFO", "keyspace")))
                    if expected is None or keys == expected:
                        return keys
                    last = f"{keys} keys"
            except PartFailed as exc:
                last = str(exc)  # still starting, or loading the dataset
            if time.monotonic() > deadline:
                raise PartFailed(self.name, f"redis did not come back with {expected} keys within "
                                            f"{self.settings.backup.redis_timeout:g}s (last: {last})")
            time.sleep(0.1)


# ------------------------------------------------------------------------------ S3 objects

class Objects:
    """Every object of the configured buckets (all buckets when none are configured), through
    the S3 API (path-style requests, region us-east-1, SigV4): the stack's object store (RustFS, or
    MinIO), any S3-compatible endpoint in tests. A backup taken from one store restores into
    another: that is how a stack moves from MinIO to RustFS."""

    name = "objects"

    def __init__(self, settings: Settings):
        self.backup = settings.backup

    def client(self):
        import boto3  # noqa: PLC0415 (heavy; only backups need it)
        from botocore.config import Config  # noqa: PLC0415

        return boto3.client("s3", endpoint_url=self.backup.s3_url, aws_access_key_id=self.backup.s3_access_key,
                            aws_secret_access_key=self.backup.s3_secret_key, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                          connect_timeout=5, read_timeout=60,
                                          retries={"max_attempts": 3, "mode": "standard"}))

    def _call(self, what: str, function: Callable, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            return function(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise PartFailed(self.name, f"{what} at {self.backup.s3_url} failed: {exc} (is the object store up? check "
                                        f"KITTY_BACKUP_S3_URL, OBJECT_STORE_ACCESS_KEY, OBJECT_STORE_SECRET_KEY)") from None

    def buckets(self, client) -> list[str]:
        if self.backup.buckets:
            return list(self.backup.buckets)
        return sorted(b["Name"] for b in self._call("listing buckets", client.list_buckets).get("Buckets", []))

    def dump(self, root: Path) -> Dumped:
        client = self.client()
        (root / OBJECTS_DIR).mkdir(mode=0o700)
        files: dict[str, dict] = {}
        objects = []
        for bucket in self.buckets(client):
            for key in self._keys(client, bucket):
                body = self._call(f"reading s3://{bucket}/{key}", client.get_object, Bucket=bucket, Key=key)["Body"]
                temp = f"{OBJECTS_DIR}/.incoming"
                entry = _write_file(root, temp, "object", lambda w: _copy(body, w))
                stored = f"{OBJECTS_DIR}/{entry['sha256']}"  # content-addressed: no key ever becomes a path
                if stored in files:
                    (root / temp).unlink()
                else:
                    os.replace(root / temp, root / stored)
                    files[stored] = {**entry, "path": stored}
                objects.append({"bucket": bucket, "key": key, "size": entry["size"], "sha256": entry["sha256"],
                                "file": stored})
        return Dumped(list(files.values()), {"endpoint": self.backup.s3_url, "objects": objects,
                                             "buckets": sorted({o["bucket"] for o in objects} | set(self.backup.buckets))})

    def _keys(self, client, bucket: str) -> list[str]:
        keys = []
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for page in self._call(f"listing s3://{bucket}", lambda: list(pages)):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    def restore(self, root: Path, info: dict) -> str:
        """Each bucket made equal to the backup: objects put back, objects the backup does not
        have deleted (the safety backup taken before holds them)."""
        client = self.client()
        wanted: dict[str, dict[str, str]] = {b: {} for b in info.get("buckets", [])}
        for obj in info.get("objects", []):
            wanted.setdefault(obj["bucket"], {})[obj["key"]] = obj["file"]
        put = deleted = 0
        for bucket, keys in wanted.items():
            existing = {b["Name"] for b in self._call("listing buckets", client.list_buckets).get("Buckets", [])}
            if bucket not in existing:
                self._call(f"creating bucket {bucket}", client.create_bucket, Bucket=bucket)
            for key, file in keys.items():
                with member(root, file).open("rb") as handle:
                    self._call(f"writing s3://{bucket}/{key}", client.put_object, Bucket=bucket, Key=key, Body=handle)
                put += 1
            for key in self._keys(client, bucket):
                if key not in keys:
                    self._call(f"deleting s3://{bucket}/{key}", client.delete_object, Bucket=bucket, Key=key)
                    deleted += 1
        return f"{put} objects in {len(wanted)} buckets" + (f"; {deleted} not in the backup removed" if deleted else "")


def _copy(body, writer: HashingWriter) -> None:
    while chunk := body.read(CHUNK):
        writer.write(chunk)


# --------------------------------------------------------------------------------------- env

class EnvFile:
    name = "env"

    def __init__(self, settings: Settings):
        self.path = settings.env_file

    def dump(self, root: Path) -> Dumped:
        if not self.path.is_file():
            raise PartFailed(self.name, f"{self.path} does not exist (or set KITTY_BACKUP_PARTS without env)",
                             Runbook.CONFIGURATION)
        entry = _write_file(root, ENV_FILE, "env", lambda w: w.write(self.path.read_bytes()))
        return Dumped([entry], {"source": str(self.path)})

    def restore(self, path: Path) -> str:
        old = self.path.read_bytes() if self.path.is_file() else None
        new = path.read_bytes()
        if old == new:
            return f"{self.path} unchanged"
        write_atomic(self.path, new, mode=0o600)
        return f"{self.path} replaced (the previous one is in the safety backup)"

