"""The runbooks under ops/runbooks/ and the Runbook enum stay in step.

Every error kitty-ops prints names a runbook path; an operator who opens it at 2 a.m. must find
it there, with the sections they expect.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kitty_ops.runbooks import RUNBOOK_DIR, Runbook

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / RUNBOOK_DIR
INDEX = RUNBOOKS / "README.md"
REQUIRED_SECTIONS = ("Symptoms", "Diagnose", "Fix")
PATH_RE = re.compile(r"ops/runbooks/([A-Za-z0-9_.-]+\.md)")
LINK_RE = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


def _headings(text: str) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def _sources() -> list[Path]:
    files = sorted((REPO / "kitty_ops").rglob("*.py"))
    files += sorted(p for p in (REPO / "ops" / "scripts").glob("*") if p.is_file())
    return files


def test_runbook_dir_is_ops_runbooks():
    assert RUNBOOKS.is_dir(), f"{RUNBOOKS} is missing"


@pytest.mark.parametrize("runbook", list(Runbook), ids=lambda r: r.value)
def test_every_runbook_exists_with_sections(runbook: Runbook):
    path = REPO / runbook.path
    assert path.is_file(), f"{runbook.name}: {runbook.path} does not exist"
    text = path.read_text(encoding="utf-8")
    assert text.strip(), f"{runbook.path} is empty"
    assert text.lstrip().startswith("# "), f"{runbook.path} has no title line"
    missing = [s for s in REQUIRED_SECTIONS if s not in _headings(text)]
    assert not missing, f"{runbook.path} lacks section heading(s): {', '.join(missing)}"


def test_no_orphan_runbooks():
    values = {r.value for r in Runbook}
    orphans = sorted(p.name for p in RUNBOOKS.glob("*.md")
                     if p.name != "README.md" and p.stem not in values)
    assert not orphans, f"runbooks not named in kitty_ops.runbooks.Runbook: {orphans}"


def test_runbook_paths_mentioned_in_code_exist():
    mentioned: dict[str, list[str]] = {}
    for source in _sources():
        for name in PATH_RE.findall(source.read_text(encoding="utf-8", errors="replace")):
            mentioned.setdefault(name, []).append(str(source.relative_to(REPO)))
    missing = {n: where for n, where in mentioned.items() if not (RUNBOOKS / n).is_file()}
    assert not missing, f"runbook paths named in the code but not present: {missing}"


def test_every_runbook_is_named_by_the_code():
    """The other direction: a runbook no error names is one an operator is never sent to."""
    code = "\n".join(p.read_text(encoding="utf-8") for p in _sources() if p.name != "runbooks.py")
    unused = [r.name for r in Runbook if f"Runbook.{r.name}" not in code and r.path not in code]
    assert not unused, f"runbooks no error names: {unused}"


def test_index_links_every_runbook():
    assert INDEX.is_file(), f"{INDEX} is missing"
    links = set(LINK_RE.findall(INDEX.read_text(encoding="utf-8")))
    missing = sorted(f"{r.value}.md" for r in Runbook if f"{r.value}.md" not in links)
    assert not missing, f"{INDEX.relative_to(REPO)} does not link: {missing}"


def test_links_between_runbooks_resolve():
    broken = []
    for page in sorted(RUNBOOKS.glob("*.md")):
        for target in LINK_RE.findall(page.read_text(encoding="utf-8")):
            if "://" not in target and not (page.parent / target).is_file():
                broken.append(f"{page.name} -> {target}")
    assert not broken, f"broken links: {broken}"


def test_runbooks_never_kill_by_name():
    offenders = [p.name for p in sorted(RUNBOOKS.glob("*.md"))
                 if re.search(r"^\s*[^#\n]*\b(pkill|killall)\b", p.read_text(encoding="utf-8"), re.M)
                 and not _only_forbidden_mentions(p.read_text(encoding="utf-8"))]
    assert not offenders, f"runbooks suggesting pkill/killall: {offenders}"


def _only_forbidden_mentions(text: str) -> bool:
    """pkill/killall may appear only in a 'never' instruction, never as a command to run."""
    lines = [l for l in text.splitlines() if re.search(r"\b(pkill|killall)\b", l)]
    return all(re.search(r"\b(never|not|no)\b", l, re.I) for l in lines)
