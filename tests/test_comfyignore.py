"""What the Registry ships: the zip `comfy node pack` builds, with the pack's .comfyignore.

comfy-cli (1.23, ``file_utils.zip_files``) zips the git-tracked files (``git ls-files``) minus those matching
.comfyignore (its non-empty, non-``#`` lines as "gitwildmatch" patterns, the .gitignore syntax), plus the
``[tool.comfy] includes`` of pyproject.toml (the pack has none). The first test applies that same rule with
git's own matcher (``git ls-files -ci --exclude-from``), writes the zip and lists it; the second runs the
real ``comfy node pack`` where comfy-cli is installed (it is not part of the test host: skipped otherwise).
"""
from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent
#: The top-level entries a user needs: code, workflows, web help pages, the frontend's locale strings, docs,
#: scripts, README, licence, metadata.
SHIPPED = {"__init__.py", "nodes", "upsampler", "workflows", "web", "locales", "docs", "scripts", "README.md",
           "LICENSE", "pyproject.toml", "requirements.txt"}
NEVER = ("benchmark/", "tests/", "dev/", ".ci/")
#: One file of each kind that the installed pack needs.
NEEDED = ("__init__.py", "nodes/__init__.py", "nodes/stage.py", "upsampler/modules.py", "web/docs/SelfCascadeStage.md",
          "workflows/sd15_cascade_2048.json", "workflows/api/sd15_cascade_2048.json", "docs/TUNING_FREE.md",
          "locales/en/main.json",
          "scripts/train_upsamplers.py", "README.md", "LICENSE", "pyproject.toml", "requirements.txt")
#: Well above today's zip (about 0.35 MB) and well below the 6 MB it was without .comfyignore.
MAX_ZIP_BYTES = 2_000_000


def _git(*args: str, cwd: Path = REPO) -> list[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.splitlines()


def _shipped(root: Path) -> list[str]:
    """comfy-cli's selection: tracked files minus the .comfyignore matches (git's own wildmatch)."""
    ignored = set(_git("ls-files", "-ci", "--exclude-from=.comfyignore", cwd=root))
    return sorted(set(_git("ls-files", cwd=root)) - ignored)


@pytest.fixture(scope="module")
def tracked():
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git checkout: the selection starts from `git ls-files`")
    return _git("ls-files")


def _check_zip(names: list[str], size: int) -> None:
    assert {n.split("/")[0] for n in names} == SHIPPED, sorted({n.split("/")[0] for n in names})
    assert not [n for n in names if n.startswith(NEVER)], [n for n in names if n.startswith(NEVER)][:5]
    assert not [n for n in NEEDED if n not in names], [n for n in NEEDED if n not in names]
    assert size < MAX_ZIP_BYTES, size


def test_the_zip_carries_what_users_need_and_nothing_else(tracked, tmp_path):
    assert ".comfyignore" in tracked or (REPO / ".comfyignore").is_file()
    assert not tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"].get("includes"), \
        "[tool.comfy] includes add files past .comfyignore: extend this test first"
    files = [n for n in _shipped(REPO) if (REPO / n).is_file()]  # comfy-cli skips tracked files not on disk
    zip_path = tmp_path / "node.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in files:
            zf.write(REPO / name, name)
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    assert names == files
    _check_zip(names, zip_path.stat().st_size)
    # every node module and every shipped workflow is in, whatever is added later
    assert {n for n in tracked if n.startswith(("nodes/", "upsampler/", "workflows/", "web/"))} <= set(names)


def test_comfy_node_pack_builds_the_same_zip(tracked, tmp_path):
    """The real `comfy node pack` on a clone of the committed tree (with this tree's .comfyignore)."""
    comfy = shutil.which("comfy")
    if comfy is None:
        pytest.skip("comfy-cli is not installed (pip install comfy-cli); the selection test above applies its rule")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    shutil.copy(REPO / ".comfyignore", clone / ".comfyignore")
    proc = subprocess.run([comfy, "--skip-prompt", "--no-enable-telemetry", "node", "pack"], cwd=clone,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with zipfile.ZipFile(clone / "node.zip") as zf:
        names = sorted(zf.namelist())
    assert names == _shipped(clone)
    _check_zip(names, (clone / "node.zip").stat().st_size)
