"""The two commands a new user types, as a stock Mac runs them: `make demo` picks a Python that
can run kitty-ops (a Mac's `python3` may be the Command Line Tools' 3.9) and needs nothing the
demo does not use (no bats, no shellcheck, no test extras); `make test` brings those in."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO

MAKE = shutil.which("make") or "make"


def make(*args: str, path: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    env.pop("PYTHON", None)
    env.pop("MAKEFLAGS", None)
    return subprocess.run([MAKE, "--no-print-directory", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def prerequisites() -> dict[str, list[str]]:
    """target -> its prerequisites, from make's own database (nothing is run)."""
    done = make("--print-data-base", "--question", "--eval", "kitty-nothing:;", "kitty-nothing")
    rules: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        match = re.match(r"^([A-Za-z0-9_./-]+):(?!=)\s*(.*)$", line)
        if match and not line.startswith(("#", "\t")):
            rules.setdefault(match[1], []).extend(match[2].split("|")[0].split())
    return rules


def needed_by(target: str, rules: dict[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    todo = [target]
    while todo:
        for prereq in rules.get(todo.pop(), []):
            if prereq not in seen:
                seen.add(prereq)
                todo.append(prereq)
    return seen


def test_demo_needs_no_test_tools_and_test_does():
    rules = prerequisites()
    demo, test = needed_by("demo", rules), needed_by("test", rules)
    assert "setup" in demo
    assert not {"system-deps", ".venv/.kitty-ops-test-installed"} & demo, demo
    assert {"system-deps", ".venv/.kitty-ops-test-installed", "setup"} <= test, test


def bare_path(tmp_path: Path) -> Path:
    """A PATH folder with the few tools make and its recipes call here, and no Python."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "uname", "echo", "test", "touch"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return bin_dir


def fake_python(bin_dir: Path, name: str, version_ok: bool) -> None:
    """A `name` on PATH: a real interpreter when version_ok, else one that fails the 3.10 check
    as the Command Line Tools' python3 (3.9) does."""
    script = bin_dir / name
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n' if version_ok else "#!/bin/sh\nexit 1\n")
    script.chmod(0o755)


def chosen_python(tmp_path: Path, pythons: dict[str, bool]) -> str:
    bin_dir = bare_path(tmp_path)
    for name, ok in pythons.items():
        fake_python(bin_dir, name, ok)
    done = make("--eval", "kitty-show-python:; @echo '[$(PYTHON)]'", "kitty-show-python", path=str(bin_dir))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_make_picks_a_python_3_10_or_newer_over_an_older_python3(tmp_path: Path):
    assert chosen_python(tmp_path, {"python3": False, "python3.12": True}) == "[python3.12]"


def test_make_uses_python3_when_it_is_new_enough(tmp_path: Path):
    assert chosen_python(tmp_path, {"python3": True}) == "[python3]"


def test_without_a_python_3_10_setup_says_what_to_install_and_creates_nothing(tmp_path: Path):
    bin_dir = bare_path(tmp_path)
    fake_python(bin_dir, "python3", version_ok=False)
    work = tmp_path / "checkout"
    work.mkdir()
    shutil.copy(REPO / "Makefile", work / "Makefile")
    shutil.copy(REPO / "pyproject.toml", work / "pyproject.toml")
    done = make("setup", path=str(bin_dir), cwd=work)
    assert done.returncode != 0
    assert "needs Python 3.10 or newer" in done.stderr
    assert "brew install python@3.12" in done.stderr
    assert not (work / ".venv").exists()
