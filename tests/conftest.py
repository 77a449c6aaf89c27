"""Test harness: a real ComfyUI (dev/host.py) in-process and as a live server, plus tiny models.

Fixtures:
- ``pack``: this repository imported as the package ``self_cascade`` (as ComfyUI imports it).
- ``tiny_model`` / ``tiny_sdxl_model``: real ModelPatcher over a small seeded UNetModel.
- ``comfy_server`` (session): a live ComfyUI server with the pack in custom_nodes, on a free
  loopback port; stopped (by its PID) at the end. ``client``: a ComfyClient for it.
- ``model_folder``: a temporary models/self_cascade folder registered with folder_paths.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "dev"))
sys.path.insert(0, str(REPO / "workflows" / "api"))
sys.path.insert(0, str(REPO / "dev" / "workflows"))  # the workflow generator's graph.py (format conversion)

import hostenv  # noqa: E402

hostenv.prepare_in_process()

import torch  # noqa: E402

# One torch thread in the test process: the tiny models are many small ops (a second thread only
# spins, ~10x slower on a loaded 2-core box), and the live server runs beside the tests.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def pack():
    """The pack imported as ``self_cascade`` (fails the test loudly if it does not import)."""
    return hostenv.load_pack()


@pytest.fixture
def tiny_model():
    import tiny_models

    return tiny_models.tiny_sd15(seed=0)


@pytest.fixture
def tiny_sdxl_model():
    import tiny_models

    return tiny_models.tiny_sdxl(seed=0)


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    server = hostenv.start_server(base)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def client(comfy_server):
    from comfy_client import ComfyClient

    return ComfyClient(comfy_server.url, timeout=60)


@pytest.fixture(scope="session")
def tiny_checkpoint_file(tmp_path_factory):
    """A seeded random-weight SD1.5-shaped checkpoint (.safetensors, ~440 MB fp16), built once per session."""
    import tiny_checkpoint

    path = tmp_path_factory.mktemp("tiny_ckpt") / tiny_checkpoint.FILENAME
    tiny_checkpoint.build_tiny_sd15_checkpoint(path, seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(comfy_server, tiny_checkpoint_file):
    """The tiny checkpoint placed (symlinked) in the live server's models/checkpoints/; returns its name."""
    folder = comfy_server.base_dir / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / tiny_checkpoint_file.name
    if not link.exists():
        link.symlink_to(tiny_checkpoint_file)
    return tiny_checkpoint_file.name


@pytest.fixture
def model_folder(pack, tmp_path):
    """A temporary models/self_cascade folder registered with folder_paths (removed afterwards)."""
    import folder_paths
    from self_cascade.nodes.common import MODEL_FOLDER, register_model_folder

    register_model_folder()
    folder = tmp_path / "models" / "self_cascade"
    folder.mkdir(parents=True)
    paths = folder_paths.folder_names_and_paths[MODEL_FOLDER][0]
    paths.insert(0, str(folder))
    try:
        yield folder
    finally:
        paths.remove(str(folder))
