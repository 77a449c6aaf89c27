"""SelfCascadeTrainUpsamplers through the real server: POST /prompt with the stock checkpoint loader.

The graph uses the seeded tiny SD1.5-shaped checkpoint (real CLIP-L and VAE classes, random
weights), a training folder under the server's input/ (one RGBA, one grayscale image, one
caption), and then loads the new file with SelfCascadeUpsamplerLoader into SelfCascadeStage.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch


def _write_images(folder) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[0:80, 0:96] / 80.0
    rgb = np.stack([np.sin(6 * xx), np.cos(4 * yy), np.sin(3 * (xx + yy))], -1) * 0.5 + 0.5
    Image.fromarray((rgb * 255).astype(np.uint8)).save(folder / "a.png")
    rgba = np.concatenate([rgb[::-1], np.full((80, 96, 1), 0.5)], -1)
    Image.fromarray((rgba * 255).astype(np.uint8), "RGBA").save(folder / "b.png")
    Image.fromarray((g.random((72, 72)) * 255).astype(np.uint8), "L").save(folder / "c.jpg")
    (folder / "a.txt").write_text("a striped red pattern")


def _run(client, prompt: dict, timeout: float) -> dict:
    """client.run, with the server's traceback in the failure message."""
    from comfy_client import ExecutionFailed

    try:
        return client.run(prompt, timeout=timeout)
    except ExecutionFailed as e:
        msgs = [m[1] for m in e.details.get("status", {}).get("messages", []) if m[0] == "execution_error"]
        tb = "".join(msgs[0].get("traceback", [])) if msgs else ""
        raise ExecutionFailed(f"{e}\n{tb}", e.details) from None


def _train_prompt(ckpt: str, folder: str, save_name: str, steps: int = 3, learning_rate: float = 1e-3) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "SelfCascadeTrainUpsamplers", "inputs": {
            "model": ["1", 0], "vae": ["1", 2], "clip": ["1", 1], "folder": folder, "prompt": "a pattern",
            "caption_dropout": 0.3, "width": 64, "height": 64, "scale": 2.0, "steps": steps,
            "learning_rate": learning_rate, "batch_size": 1, "K": 700.0, "end_timestep": 100.0, "pivot_mode": "downsample",
            "variant": "light", "variant_size": 16, "seed": 1, "save_name": save_name, "checkpoint_every": 2,
            "resume": False}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}},
    }


def test_training_node_writes_its_file_and_the_loader_uses_it(pack, comfy_server, client, tiny_checkpoint):
    from self_cascade.upsampler.fileformat import load_upsamplers

    _write_images(comfy_server.base_dir / "input" / "train_d")
    entry = _run(client, _train_prompt(tiny_checkpoint, "train_d", "d_server_ups"), timeout=300)
    out = comfy_server.base_dir / "models" / "self_cascade" / "d_server_ups.safetensors"
    assert out.is_file(), f"no file at {out}"
    assert (out.parent / "d_server_ups.ckpt.safetensors").is_file()
    uset = load_upsamplers(str(out))
    assert uset.info.steps == 3 and uset.info.variant == "light" and uset.info.family == "SD15"
    assert uset.info.K == 700.0 and uset.info.end_timestep == 100.0 and uset.info.scale == 2.0
    assert entry["outputs"]["3"]["images"], "the loss curve should be previewed"

    # loadable at once by the loader, and used by a stage
    info = client.object_info()["SelfCascadeUpsamplerLoader"]["input"]["required"]["upsampler_name"]
    options = info[0] if isinstance(info[0], list) else info[1]["options"]
    assert "d_server_ups.safetensors" in options
    assert "d_server_ups.ckpt.safetensors" not in options, "training checkpoints are not upsampler sets"
    stage = {
        "4": {"class_type": "SelfCascadeUpsamplerLoader", "inputs": {"upsampler_name": "d_server_ups.safetensors"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "a pattern", "clip": ["1", 1]}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "7": {"class_type": "SelfCascadeStage", "inputs": {
            "model": ["1", 0], "positive": ["5", 0], "negative": ["5", 0], "latent": ["6", 0], "scale": 2.0,
            "upscale_method": "bicubic", "seed": 1, "steps": 3, "cfg": 1.0, "sampler_name": "euler",
            "scheduler": "normal", "K": 700.0, "upsamplers": ["4", 0]}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "d_train_stage"}},
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_checkpoint}},
    }
    entry = _run(client, stage, timeout=300)
    files = entry["outputs"]["8"]["latents"]
    import safetensors.torch

    t = safetensors.torch.load_file(str(comfy_server.base_dir / "output" / files[0]["subfolder"] / files[0]["filename"]))
    assert tuple(t["latent_tensor"].shape) == (1, 4, 8, 8) and torch.isfinite(t["latent_tensor"]).all()


@pytest.mark.parametrize("save_name, folder, message", [
    ("../evil", "train_d", "path separator"),
    ("..", "train_d", "'..'"),
    ("d_ok_name", "../", "'..'"),
    ("d_ok_name", "/etc", "absolute path"),
    ("d_ok_name", "d_empty", "has no images"),
    ("d_ok_name", "d_broken", "could not be read"),
])
def test_training_node_bad_input_is_a_clear_error(comfy_server, client, tiny_checkpoint, save_name, folder, message):
    from comfy_client import ExecutionFailed

    (comfy_server.base_dir / "input" / "d_empty").mkdir(parents=True, exist_ok=True)
    broken = comfy_server.base_dir / "input" / "d_broken"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(ExecutionFailed, match=message):
        client.run(_train_prompt(tiny_checkpoint, folder, save_name), timeout=120)
    assert not (comfy_server.base_dir / "models" / "self_cascade" / f"{save_name}.safetensors").exists()


def test_a_finished_training_prompt_queued_again_never_fails_nor_overwrites(comfy_server, client, tiny_checkpoint):
    """Queue a finished training graph again, unchanged: served from ComfyUI's cache. After another prompt
    evicted it, again: the node finds its own finished file and returns it (the file is not rewritten). A
    different run with the same save_name is refused and leaves the file as it was."""
    from comfy_client import ExecutionFailed

    _write_images(comfy_server.base_dir / "input" / "train_q")
    prompt = _train_prompt(tiny_checkpoint, "train_q", "d_requeue", steps=2)
    _run(client, prompt, timeout=300)
    out = comfy_server.base_dir / "models" / "self_cascade" / "d_requeue.safetensors"
    first = (out.read_bytes(), out.stat().st_mtime_ns)
    again = _run(client, prompt, timeout=300)
    assert again["outputs"]["3"]["images"]
    other = {"9": {"class_type": "EmptyLatentImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
             "10": {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": "d_requeue_other"}}}
    _run(client, other, timeout=120)  # the training node's outputs leave the cache
    third = _run(client, prompt, timeout=300)
    assert third["outputs"]["3"]["images"]
    assert (out.read_bytes(), out.stat().st_mtime_ns) == first, "the finished file was rewritten"
    with pytest.raises(ExecutionFailed, match="already exists"):
        client.run(_train_prompt(tiny_checkpoint, "train_q", "d_requeue", steps=2, learning_rate=2e-3), timeout=300)
    assert (out.read_bytes(), out.stat().st_mtime_ns) == first, "a different run overwrote the file"
