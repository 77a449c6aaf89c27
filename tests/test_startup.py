"""scripts/comfy_startup.py: the one start-up path (ComfyUI first on sys.path, the repo as ``self_cascade``)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
def _run(code: str, env: dict | None = None, cwd: Path = REPO / "scripts") -> subprocess.CompletedProcess:
    """``python -c code`` in ``cwd`` (scripts/: ``-c`` puts the working folder first on the path, as running a
    script from scripts/ does)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "PYTHONPATH")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(cwd),
                          env=full_env, timeout=300)


def test_start_finds_comfyui_in_custom_nodes_and_keeps_its_nodes_module(tmp_path):
    """Installed as ComfyUI/custom_nodes/<pack>: found without settings; ``nodes`` is ComfyUI's, ours is
    ``self_cascade.nodes``."""
    import hostenv

    comfy_root = hostenv.comfyui_root()
    fake = tmp_path / "ComfyUI"
    (fake / "custom_nodes" / "self_cascade").mkdir(parents=True)
    for entry in comfy_root.iterdir():  # a ComfyUI tree by links, with this repo installed in custom_nodes
        if entry.name != "custom_nodes":
            (fake / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    pack_copy = fake / "custom_nodes" / "self_cascade"  # a real copy, as a git clone there would be
    for part in ("__init__.py", "scripts", "nodes", "upsampler"):
        copy = shutil.copytree if (REPO / part).is_dir() else shutil.copy2
        copy(REPO / part, pack_copy / part)
    code = ("import sys; from comfy_startup import start; "
            "pack = start(cpu=True); import nodes, self_cascade.nodes.cascade as c; "
            "print(nodes.__file__); print(pack.__name__, c.StageSettings().K)")
    env = {"PYTHONPATH": os.pathsep.join(hostenv.extra_pythonpath()[1:])}  # the torchvision stub, if needed
    proc = _run(code, env, cwd=pack_copy / "scripts")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert Path(lines[-2]).resolve() == (comfy_root / "nodes.py").resolve()
    assert lines[-1] == "self_cascade 700.0"


def test_start_without_comfyui_says_what_to_set(tmp_path):
    proc = _run("import sys; from comfy_startup import start; start()")
    assert proc.returncode != 0
    assert "COMFYUI_PATH" in proc.stderr and "--comfyui" in proc.stderr
    proc = _run("import sys; from comfy_startup import start; start()",
                {"COMFYUI_PATH": str(tmp_path)})
    assert proc.returncode != 0 and f"COMFYUI_PATH={tmp_path} is not a ComfyUI folder" in proc.stderr


def test_pure_torch_start_loads_no_comfyui():
    proc = _run("import sys; from comfy_startup import start; start(comfyui=False); "
                "from self_cascade.upsampler import fileformat; "
                "assert not [m for m in sys.modules if m.split('.')[0] in ('comfy', 'comfy_api')]; print('ok')")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.parametrize("script", ["benchmark/evaluate.py", "benchmark/direct_failure.py", "dev/main_job.py"])
def test_dev_scripts_start_through_hostenv(script):
    """``--help`` of a dev script imports the pack through hostenv with no sys.path edit of its own."""
    proc = subprocess.run([sys.executable, str(REPO / script), "--help"], capture_output=True, text=True,
                          timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage" in proc.stdout
