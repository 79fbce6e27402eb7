"""The architecture is checked, not just described: `lint-imports` keeps the layer contract of
pyproject.toml on the real tree, and fails, naming the import, when a lower layer reaches up."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first: the copy under test, not the editable install, is what grimp reads.
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def copy_of_the_tree(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "kitty_ops", tmp_path / "kitty_ops", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_the_layer_contract(tmp_path: Path):
    done = lint_imports(copy_of_the_tree(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def lint_with_added_import(tmp_path: Path, module: str, statement: str) -> subprocess.CompletedProcess:
    """lint-imports on a copy of the tree where `module` (a path under kitty_ops/) also runs `statement`."""
    root = copy_of_the_tree(tmp_path)
    source = root / "kitty_ops" / module
    source.write_text(source.read_text() + f"\n{statement}  # noqa: E402,F401\n")
    return lint_imports(root)


def test_an_upward_import_breaks_the_contract_and_is_named(tmp_path: Path):
    done = lint_with_added_import(tmp_path, "host/ports.py", "from kitty_ops.llama import command")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "kitty_ops.host is not allowed to import kitty_ops.llama" in done.stdout
    assert "kitty_ops.host.ports -> kitty_ops.llama.command" in done.stdout


def test_nothing_imports_the_cli(tmp_path: Path):
    done = lint_with_added_import(tmp_path, "health/judge.py", "import kitty_ops.cli")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "kitty_ops.health.judge -> kitty_ops.cli" in done.stdout
