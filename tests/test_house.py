"""The house rules the code keeps: one start-up path, small node modules, comments that speak of the code.

Each check reads the repository's own files (no ComfyUI needed) and names every offender.
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Not the project's code: the host, git, outputs, and the ignored local folders (the GPU-run copy of ComfyUI,
#: scratch snapshots, caches) that never reach a clone.
SKIP = (".host/", ".git/", "out/", "benchmark/results/", ".gpu/", ".devsnap/", ".devdeps/", ".mine/", ".hypothesis/")
#: The only files allowed to edit sys.path: the start-up helper and the test conftest.
PATH_EDITORS = {"scripts/comfy_startup.py", "tests/conftest.py"}
PATH_EDIT = re.compile(r"sys\.path\.(insert|append|extend|remove)\(|sys\.path\s*(\+=|=[^=])|sys\.path\[")
NODES_MODULE_MAX_LINES = 260
PEOPLE = re.compile(r"\b(engineer [A-Z]\b|[A-Z]'s (module|patch|code)\b|the lead\b|Others add\b)")
DOC_REF = re.compile(r"\b([A-Z][A-Z_]+\.md)\b")


def _files(*suffixes: str):
    for path in sorted(REPO.rglob("*")):
        rel = path.relative_to(REPO).as_posix()
        if path.is_file() and path.suffix in suffixes and not rel.startswith(SKIP):
            yield rel, path


def test_no_sys_path_edit_outside_the_startup_helper():
    offenders = []
    for rel, path in _files(".py"):
        if rel in PATH_EDITORS or rel == "tests/test_house.py":
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if PATH_EDIT.search(line.split("#", 1)[0]):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "sys.path edited outside scripts/comfy_startup.py:\n" + "\n".join(offenders)


def test_node_modules_stay_small():
    big = {rel: n for rel, path in _files(".py") if rel.startswith("nodes/")
           and (n := len(path.read_text().splitlines())) > NODES_MODULE_MAX_LINES}
    assert not big, f"modules in nodes/ over {NODES_MODULE_MAX_LINES} lines (split them by purpose): {big}"


def test_comments_and_docs_speak_of_the_code():
    """No person or team role named; every ``NAME.md`` cited is a file of this repository."""
    existing = {p.name for _, p in _files(".md")}
    offenders = []
    for rel, path in _files(".py", ".md"):
        if rel == "tests/test_house.py":
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if PEOPLE.search(line):
                offenders.append(f"{rel}:{n}: names a person or role: {line.strip()[:100]}")
            for doc in DOC_REF.findall(line):
                if doc not in existing:
                    offenders.append(f"{rel}:{n}: cites {doc}, which the repository does not contain")
    assert not offenders, "\n".join(offenders)
