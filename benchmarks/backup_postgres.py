#!/usr/bin/env python3
"""Backup of a large postgres database: `kitty-ops backup` against a bare `pg_dump -Fc` of the
same database, measured in the same run.

The stack: the compose tier on the local Docker engine (the test image's postgres 15), with a
database of at least --size-mb MB (default 500) generated in place: rows of id + 480 characters
of md5 text, which compress about as much as real application data.

Measured, interleaved run by run so machine noise hits both alike:
  bare pg_dump      `docker exec <postgres> pg_dump -Fc -U kitty -d kitty > file`: the dump
                    alone, written to disk (the same transport kitty-ops uses)
  kitty-ops backup  `python -m kitty_ops backup` with KITTY_BACKUP_PARTS=postgres: the same dump
                    hashed while written, fsynced, `pg_restore --list` over it, the manifest,
                    the rename; interpreter start included
Target: kitty-ops <= 1.2 x the bare pg_dump. Timing never fails the run (exit 0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time

from common import docker_test_image, header, started, temp_stack, verdict

from tests.harness import StackProject

ROW_BYTES = 530  # on disk per row, roughly: 4 + 480 characters + tuple overhead


def psql(project: StackProject, sql: str, timeout: float = 1800) -> str:
    done = project.compose("exec", "-T", "postgres", "psql", "-U", "kitty", "-d", "kitty", "-v", "ON_ERROR_STOP=1",
                           "-tAc", sql, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=500)
    args = parser.parse_args(argv)
    header(f"postgres backup: kitty-ops backup vs bare pg_dump -Fc ({args.size_mb} MB database)")
    image = docker_test_image()
    if image is None:
        return 1
    with temp_stack("backup", image) as project:
        root = project.root
        backups = root / "backups"
        project.stack_env({"q4": ""}, profiles="", KITTY_BACKUP_DIR=backups, KITTY_BACKUP_PARTS="postgres")
        if not started(project):
            return 1
        rows = args.size_mb * 1024 * 1024 // ROW_BYTES
        began = time.monotonic()
        psql(project, "CREATE TABLE payload (id int, body text)")
        # 15 different md5s per row: hex text that compresses about 2:1, like real data does.
        psql(project, f"INSERT INTO payload SELECT g, (SELECT string_agg(md5((g * 31 + k)::text), '') "
                      f"FROM generate_series(0, 14) k) FROM generate_series(1, {rows}) g")
        size = int(psql(project, "SELECT pg_database_size('kitty')"))
        print(f"database: {size / 2**20:.0f} MB in {rows} rows (generated in {time.monotonic() - began:.0f} s)")
        container = f"{project.compose_project}-postgres-1"
        bare, kitty, dump_sizes = [], [], []
        for _ in range(args.runs):
            target = root / "bare.dump"
            t = time.perf_counter()
            with target.open("wb") as out:
                done = subprocess.run(["docker", "exec", container, "pg_dump", "-Fc", "-U", "kitty", "-d", "kitty"],
                                      stdout=out, stderr=subprocess.PIPE, timeout=3600)
            bare.append(time.perf_counter() - t)
            if done.returncode != 0:
                raise RuntimeError(done.stderr.decode())
            dump_sizes.append(target.stat().st_size)
            target.unlink()

            t = time.perf_counter()
            done = project.run("backup", "--json", timeout=3600)
            kitty.append(time.perf_counter() - t)
            if done.returncode != 0:
                raise RuntimeError(done.stderr)
            shutil.rmtree(json.loads(done.stdout)["path"])
    b, k = statistics.median(bare), statistics.median(kitty)
    print(f"dump size: {statistics.median(dump_sizes) / 2**20:.0f} MB (custom format, compressed)")
    print(f"  bare pg_dump -Fc    runs {', '.join(f'{x:.2f}' for x in bare)} s   median {b:6.2f} s")
    print(f"  kitty-ops backup    runs {', '.join(f'{x:.2f}' for x in kitty)} s   median {k:6.2f} s")
    print(f"kitty-ops / bare pg_dump = {k / b:5.3f}  (target <= 1.2: {verdict(k / b, 1.2)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
