"""The shell that runs on a Mac uses only what a stock Mac has: bash 3.2 and the BSD userland.

Every ops script, the shell test helpers and every Makefile recipe is scanned for commands,
flags and bash-4 syntax that macOS lacks. A line may use one only in a branch taken on Linux
alone, marked so a reader sees it: a `# linux-only` comment on the line, or every line after a
`# linux-only from here` comment in a file (ops/dev/test-docker-engine.sh's Debian path).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness import REPO

COMMAND_START = r"(?:^\s*|[;&|(`]\s*|\b(?:then|do|else|exec|sudo|\$sudo|command|xargs(?:\s+-\S+)*)\s+|!\s+|\$\(\s*)"

# pattern -> what a Mac lacks and what to use instead
GNU_ONLY = {
    COMMAND_START + r"timeout\b": "timeout(1) is GNU coreutils: use a deadline in bash (a background job and kill)",
    COMMAND_START + r"setsid\b": "setsid(1) is util-linux: macOS has none",
    COMMAND_START + r"nproc\b": "nproc is GNU: use getconf _NPROCESSORS_ONLN",
    COMMAND_START + r"sha256sum\b": "sha256sum is GNU: use shasum -a 256",
    COMMAND_START + r"tac\b": "tac is GNU: use tail -r (BSD) or awk",
    COMMAND_START + r"(?:mapfile|readarray)\b": "mapfile/readarray are bash 4: read in a while loop",
    r"\breadlink\s+-f\b": "readlink -f is GNU (macOS 12.3+ only): use cd \"$(dirname ...)\" && pwd",
    r"\bstat\s+-c\b": "stat -c is GNU: BSD stat takes -f (stat -f %Lp for the mode)",
    r"\bstat\s+--": "stat's long options are GNU",
    r"\bdate\s+(?:[^|;]*\s)?-d\b": "date -d is GNU: BSD date takes -j -f",
    r"\bsed\s+(?:-[a-zA-Z]*\s+)*-i(?:\s|$)": "sed -i with no attached suffix differs on BSD: use sed -i.bak",
    r"\bsed\s+.*--in-place": "sed --in-place is GNU",
    r"\bgrep\s+(?:-[a-zA-Z]*)?P": "grep -P is GNU: use grep -E",
    r"\bfind\b.*\s-printf\b": "find -printf is GNU",
    r"\b(?:declare|local|typeset)\s+-[a-zA-Z]*A": "associative arrays are bash 4",
    r"\$\{[A-Za-z_][A-Za-z0-9_]*(?:,,?|\^\^?)\}": "${var,,} and ${var^^} are bash 4: use tr",
    r"\|&": "|& is bash 4: use 2>&1 |",
    r"&>>": "&>> is bash 4: use >>FILE 2>&1",
    r";;&|;&\s*$": "case fall-through (;& and ;;&) is bash 4",
}


def shell_files() -> list[Path]:
    files = sorted((REPO / "ops" / "scripts").glob("*.sh")) + sorted((REPO / "ops" / "dev").glob("*.sh"))
    return files + sorted((REPO / "tests" / "bats").glob("*.ba*"))


def makefile_recipes() -> list[tuple[int, str]]:
    """(line number, recipe line) of the Makefile: the lines make hands to the shell."""
    lines = (REPO / "Makefile").read_text().splitlines()
    return [(n, line) for n, line in enumerate(lines, 1) if line.startswith("\t")]


def code_lines(text: str) -> list[tuple[int, str]]:
    """Lines that run on macOS: comments dropped, Linux-only lines and sections left out."""
    kept = []
    for n, line in enumerate(text.splitlines(), 1):
        if re.match(r"\s*#\s*linux-only from here", line):
            break
        if "# linux-only" in line or line.lstrip().startswith("#"):
            continue
        kept.append((n, line))
    return kept


def offences(lines: list[tuple[int, str]]) -> list[str]:
    found = []
    for n, line in lines:
        code = re.sub(r"\s#\s.*$", "", line)  # a trailing comment
        for pattern, why in GNU_ONLY.items():
            if re.search(pattern, code):
                found.append(f"line {n}: {line.strip()!r}: {why}")
    return found


@pytest.mark.parametrize("path", shell_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_shell_that_runs_on_macos_uses_no_gnu_only_command(path: Path):
    found = offences(code_lines(path.read_text()))
    assert not found, f"{path.relative_to(REPO)}:\n" + "\n".join(found)


def test_makefile_recipes_use_no_gnu_only_command():
    recipes = [(n, line) for n, line in makefile_recipes() if "# linux-only" not in line]
    found = offences(recipes)
    assert not found, "Makefile:\n" + "\n".join(found)


@pytest.mark.parametrize("line", [
    'ids="$(timeout 5 docker ps)"',
    "  setsid dockerd &",
    "make -j$(nproc)",
    "x=$(find . -type f | sort | xargs sha256sum)",
    'dir="$(readlink -f "$0")"',
    'mode="$(stat -c %a "$f")"',
    'when="$(date -d @1 +%s)"',
    "sed -i 's/a/b/' file",
    "sed -n -i 's/a/b/' file",
    "mapfile -t lines < file",
    "declare -A seen",
    'echo "${name,,}"',
    "make 2>&1 |& tee log",
    "echo hi &>> log",
])
def test_the_scan_catches_each_gnu_only_form(line: str):
    assert offences([(1, line)]), f"not caught: {line}"


@pytest.mark.parametrize("line", [
    "sed -i.bak 's/a/b/' file",
    'echo "--timeout 5"',
    "LLAMACPP_HEALTH_TIMEOUT=20",
    "getconf _NPROCESSORS_ONLN",
    "shasum -a 256 file",
    'stat -f %Lp "$f"',
    'for p in ${ports[@]+"${ports[@]}"}; do :; done',
    "  dockerd --storage-driver=vfs &  # linux-only: Docker Desktop runs the engine on a Mac",
])
def test_the_scan_passes_portable_forms(line: str):
    assert not offences(code_lines(line)), f"flagged: {line}"
