"""workflows/api/queue_workflow.py: overrides by node role, and messages a user can act on,
against the real server (rejected prompt, missing files, pack not installed) and no server."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLI = REPO / "workflows" / "api" / "queue_workflow.py"


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), *args], capture_output=True, text=True, timeout=timeout)


def dry(name: str, *args: str) -> dict:
    proc = run_cli(name, "--dry-run", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def by_title(prompt: dict, title: str) -> dict:
    (node,) = [n for n in prompt.values() if n["_meta"]["title"] == title]
    return node["inputs"]


def test_overrides_find_nodes_by_role():
    p = dry("sd15_cascade_2048", "--prompt", "P", "--negative", "N", "--seed", "9", "--steps", "5",
            "--width", "640", "--height", "384", "--checkpoint", "c.safetensors", "--set", "Stage 2: 2048px.K=650")
    assert by_title(p, "Positive Prompt")["text"] == "P" and by_title(p, "Negative Prompt")["text"] == "N"
    assert by_title(p, "Base Latent")["width"] == 640 and by_title(p, "Base Latent")["height"] == 384
    samplers = [n for n in p.values() if n["class_type"] in ("KSampler", "SelfCascadeStage")]
    assert len(samplers) == 3 and all(n["inputs"]["seed"] == 9 and n["inputs"]["steps"] == 5 for n in samplers)
    assert by_title(p, "Load Checkpoint")["ckpt_name"] == "c.safetensors"
    assert by_title(p, "Stage 2: 2048px")["K"] == 650 and by_title(p, "Stage 1: 1024px")["K"] == 700.0


def test_sdxl_size_override_keeps_size_conditioning_consistent():
    p = dry("sdxl_cascade_4096", "--width", "896", "--height", "1152", "--prompt", "P", "--upsampler", "u.safetensors")
    for title in ("Positive Prompt", "Negative Prompt"):
        c = by_title(p, title)
        assert (c["width"], c["height"], c["target_width"], c["target_height"]) == (896, 1152, 896, 1152)
        assert c["crop_w"] == 0 and c["crop_h"] == 0
    assert by_title(p, "Positive Prompt")["text_g"] == "P" == by_title(p, "Positive Prompt")["text_l"]
    assert by_title(p, "Load Upsamplers")["upsampler_name"] == "u.safetensors"


def test_upsampler_override_swaps_the_untrained_node_for_a_loader():
    """sd15_cascade_2048_upsamplers ships with the untrained node (no file); --upsampler replaces it with a
    loader of the file under the same id (the stages' links stay) and sets the linked strengths to 1.0."""
    p = dry("sd15_cascade_2048_upsamplers")
    (ups,) = [k for k, n in p.items() if n["class_type"] == "SelfCascadeUntrainedUpsamplers"]
    stages = [n["inputs"] for n in p.values() if n["class_type"] == "SelfCascadeStage"]
    assert len(stages) == 2 and all(s["upsamplers"] == [ups, 0] and s["strength"] == [ups, 1] for s in stages)
    p = dry("sd15_cascade_2048_upsamplers", "--upsampler", "u.safetensors")
    assert not [n for n in p.values() if n["class_type"] == "SelfCascadeUntrainedUpsamplers"]
    assert p[ups]["class_type"] == "SelfCascadeUpsamplerLoader"
    assert by_title(p, "Load Upsamplers")["upsampler_name"] == "u.safetensors"
    stages = [n["inputs"] for n in p.values() if n["class_type"] == "SelfCascadeStage"]
    assert all(s["upsamplers"] == [ups, 0] and s["strength"] == 1.0 for s in stages), stages


def test_bad_arguments_are_explained():
    proc = run_cli("no_such_workflow")
    assert proc.returncode == 1 and "shipped workflows:" in proc.stderr and "sd15_cascade_2048" in proc.stderr
    proc = run_cli(str(REPO / "workflows" / "sd15_cascade_2048.json"))
    assert proc.returncode == 1 and "UI-format" in proc.stderr
    proc = run_cli("sd15_cascade_2048", "--upsampler", "x.safetensors", "--dry-run")
    assert proc.returncode == 1 and "no node titled 'SelfCascadeUpsamplerLoader'" in proc.stderr
    assert "tuning-free" in proc.stderr
    proc = run_cli("sd15_cascade_2048", "--set", "Base Latent.depth=3", "--dry-run")
    assert proc.returncode == 1 and "has no input 'depth'" in proc.stderr


def test_server_not_running():
    import hostenv

    port = hostenv.free_port()
    proc = run_cli("sd15_cascade_2048", "--server", f"http://127.0.0.1:{port}")
    assert proc.returncode == 1
    assert f"cannot reach ComfyUI at http://127.0.0.1:{port}" in proc.stderr and "Is the server running?" in proc.stderr


def test_rejected_prompt_prints_servers_validation_message(comfy_server, tiny_checkpoint):
    proc = run_cli("sd15_cascade_2048", "--server", comfy_server.url, "--checkpoint", tiny_checkpoint,
                   "--set", "Base Latent.width=7")
    assert proc.returncode == 2, proc.stderr
    assert "ComfyUI rejected the prompt" in proc.stderr
    assert "EmptyLatentImage" in proc.stderr and "width" in proc.stderr and "smaller than min" in proc.stderr


def test_missing_checkpoint_and_upsampler_files(comfy_server, tiny_checkpoint):
    proc = run_cli("sd15_cascade_2048", "--server", comfy_server.url, "--checkpoint", "nope.safetensors")
    assert proc.returncode == 1
    assert "'nope.safetensors' is not in ComfyUI's models/checkpoints/" in proc.stderr
    assert tiny_checkpoint in proc.stderr  # lists what is there
    proc = run_cli("sd15_cascade_2048_upsamplers", "--server", comfy_server.url, "--checkpoint", tiny_checkpoint,
                   "--upsampler", "nope.safetensors")
    assert proc.returncode == 1 and "models/self_cascade/" in proc.stderr and "--upsampler" in proc.stderr


@pytest.fixture(scope="module")
def server_without_pack(tmp_path_factory):
    import hostenv

    server = hostenv.start_server(tmp_path_factory.mktemp("nopack"), with_pack=False)
    try:
        yield server
    finally:
        server.stop()


def test_pack_not_installed(server_without_pack):
    proc = run_cli("sd15_cascade_2048", "--server", server_without_pack.url)
    assert proc.returncode == 1
    assert "install the Self-Cascade pack" in proc.stderr and "SelfCascadeStage" in proc.stderr


def test_image_override(tmp_path):
    """--image sets LoadImage's input (the uploaded name; in a dry run the file's name) and is checked first."""
    img = tmp_path / "photo.png"
    img.write_bytes(b"\x89PNG\r\n\x1a\n")  # only its existence matters for a dry run
    p = dry("sd15_image_cascade_2048", "--image", str(img))
    assert by_title(p, "Input Image")["image"] == "photo.png"
    proc = run_cli("sd15_image_cascade_2048", "--image", str(tmp_path / "missing.png"), "--dry-run")
    assert proc.returncode == 1 and "missing.png" in proc.stderr and "no such file" in proc.stderr
    proc = run_cli("sd15_cascade_2048", "--image", str(img), "--dry-run")
    assert proc.returncode == 1 and "no node titled 'LoadImage'" in proc.stderr
