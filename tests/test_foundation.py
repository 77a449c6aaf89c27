"""The pack installs and runs like any ComfyUI custom node, on a real ComfyUI host."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent


def test_core_imports_without_comfyui():
    """`upsampler/` is pure torch: it imports in a fresh interpreter with no ComfyUI on the path."""
    code = ("import sys, pkgutil, importlib, upsampler; "
            "[importlib.import_module('upsampler.' + m.name) for m in pkgutil.iter_modules(upsampler.__path__)]; "
            "assert not [m for m in sys.modules if m == 'comfy' or m.startswith('comfy.')], 'core imported comfy'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO))  # -c puts the cwd on the path


def test_pack_root_imports_outside_comfyui():
    """Importing the pack's root package with no comfy_api available must not fail."""
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('sc', {str(REPO / '__init__.py')!r}, "
            f"submodule_search_locations=[{str(REPO)!r}]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "assert not hasattr(m, 'comfy_entrypoint')")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(REPO))  # -c puts the cwd on the path


def test_entrypoint_lists_v3_nodes_with_prefix_and_tooltips(pack):
    import asyncio

    ext = asyncio.run(pack.comfy_entrypoint())
    nodes = asyncio.run(ext.get_node_list())
    assert nodes, "the extension lists no nodes"
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS"), "V1 mappings would make ComfyUI ignore the entry point"
    for node in nodes:
        schema = node.define_schema()
        assert schema.node_id.startswith("SelfCascade"), schema.node_id
        assert schema.category.startswith("sampling/self_cascade")
        for inp in schema.inputs:
            assert inp.tooltip, f"{schema.node_id}.{inp.id} has no tooltip"


def test_model_folder_registered(pack):
    import folder_paths
    from self_cascade.nodes.common import MODEL_FOLDER

    paths, exts = folder_paths.folder_names_and_paths[MODEL_FOLDER]
    assert any(Path(p).name == "self_cascade" and Path(p).parent == Path(folder_paths.models_dir) for p in paths)
    assert exts == {".safetensors"}


def test_pyproject_and_requirements_agree():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = sorted(d.replace(" ", "") for d in meta["project"]["dependencies"])
    reqs = sorted(line.replace(" ", "") for line in (REPO / "requirements.txt").read_text().splitlines()
                  if line.strip() and not line.startswith("#"))
    assert deps == reqs
    assert not any(r.lower().startswith("torch") for r in reqs), "never install torch from requirements.txt"
    comfy = meta["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon", "requires-comfyui"):
        assert comfy.get(key), key


def test_requirements_leave_torch_alone(tmp_path):
    """`pip install -r requirements.txt` in the host venv keeps torch's version unchanged."""
    before = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                            capture_output=True, text=True, check=True).stdout
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                           "-r", str(REPO / "requirements.txt")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True, check=True).stdout
    assert before == after


def test_server_lists_every_node_with_category_and_tooltips(pack, comfy_server, client):
    import asyncio

    import hostenv

    log = comfy_server.log()
    assert not hostenv.pack_import_failures(log), log[-3000:]
    info = client.object_info()
    nodes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    for node in nodes:
        nid = node.define_schema().node_id
        assert nid in info, f"{nid} missing from /object_info; server log:\n{log[-3000:]}"
        entry = info[nid]
        assert entry["category"].startswith("sampling/self_cascade")
        for section in ("required", "optional"):
            for name, spec in entry["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{nid}.{name} has no tooltip in /object_info"


def test_prompt_through_server_uses_pack_node(comfy_server, client):
    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 96, "batch_size": 2}},
        "2": {"class_type": "SelfCascadePivotUpsample",
              "inputs": {"latent": ["1", 0], "scale": 2.0, "upscale_method": "bicubic", "width": 0, "height": 0}},
        "3": {"class_type": "SaveLatent", "inputs": {"samples": ["2", 0], "filename_prefix": "foundation"}},
    }
    entry = client.run(prompt, timeout=120)
    files = entry["outputs"]["3"]["latents"]
    assert files and files[0]["filename"].endswith(".latent")
    import safetensors.torch

    path = comfy_server.base_dir / "output" / files[0]["subfolder"] / files[0]["filename"]
    t = safetensors.torch.load_file(str(path))["latent_tensor"]
    assert tuple(t.shape) == (2, 4, 24, 16)


def test_rejected_prompt_is_reported(client):
    from comfy_client import PromptRejected

    bad = {"1": {"class_type": "SelfCascadePivotUpsample", "inputs": {"scale": 2.0}},
           "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}}}
    with pytest.raises(PromptRejected) as exc:
        client.queue(bad)
    assert "latent" in str(exc.value)


def test_broken_pack_is_detected(tmp_path):
    """The import-failure check really fires: a pack whose import raises is caught from the log."""
    import hostenv

    broken = tmp_path / "custom_nodes" / "self_cascade"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('deliberately broken for the test')\n")
    server = hostenv.start_server(tmp_path, with_pack=False)
    try:
        failures = hostenv.pack_import_failures(server.log())
    finally:
        server.stop()
    assert failures, server.log()[-3000:]


def test_lint_clean():
    """ruff (configured in pyproject.toml) finds nothing in the repository."""
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", str(REPO)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pack_registers_against_the_newer_schema_fields():
    """Through ComfyUI's own load_custom_node, once with a stub of newer releases' schema fields on the real io
    module (tests/newer_schema_stub.py: Schema.search_aliases, inputs' advanced, core's KSampler under
    model/sampling): every node registers, uses the aliases and the advanced fold, and sits next to core's."""
    import json
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "dev"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "newer_schema_stub.py"), "--newer"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    found = report["nodes"]
    assert report["loaded"] and len(found) == 9, found
    assert all(n["category"].startswith("model/sampling/self_cascade") for n in found.values()), found
    for node_id in ("SelfCascadeStage", "SelfCascadeUpscale"):
        assert {"hires fix", "upscale", "high resolution"} <= set(found[node_id]["search_aliases"]), node_id
        assert {"upscale_method", "end_timestep"} <= set(found[node_id]["advanced"]), node_id
    assert "K_later" in found["SelfCascadeUpscale"]["advanced"]
    assert not {"K", "K_mode", "seed", "steps"} & set(found["SelfCascadeUpscale"]["advanced"])


def test_the_0_3_75_floor_gets_none_of_the_newer_fields(pack):
    """On the real 0.3.75 host nothing newer is passed: the schemas have no aliases, no input is folded, the
    category is the old one (the same nodes as the stub test above, read in this process)."""
    import asyncio

    from comfy_api.latest import io

    nodes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    for node in nodes:
        schema = node.define_schema()
        assert not hasattr(schema, "search_aliases") and schema.category.startswith("sampling/self_cascade")
        assert not any(getattr(i, "advanced", None) for i in schema.inputs), schema.node_id
    assert "advanced" not in io.Float.Input.__init__.__code__.co_varnames, "the floor is not 0.3.75 any more"
