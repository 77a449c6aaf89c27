"""The tuned nodes in a real graph on the live server: Loader -> Apply -> KSampler, and a mismatch error."""
from __future__ import annotations

import pytest
import torch


def _graph(ckpt: str, upsamplers: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "SelfCascadePivotUpsample", "inputs": {
            "latent": ["5", 0], "scale": 2.0, "upscale_method": "bicubic", "width": 0, "height": 0}},
        "7": {"class_type": "SelfCascadeUpsamplerLoader", "inputs": {"upsampler_name": upsamplers}},
        "8": {"class_type": "SelfCascadeApplyUpsamplers", "inputs": {
            "model": ["1", 0], "upsamplers": ["7", 0], "pivot": ["6", 0], "strength": 1.0, "end_timestep": 100.0}},
        "9": {"class_type": "KSampler", "inputs": {
            "model": ["8", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["6", 0],
            "seed": 2, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.7}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "tuned"}},
    }


def _tiny_checkpoint_set(variant: str, family: str = "SD15"):
    """A fresh set for the test checkpoint's UNet (its taps from the same meta-built UNet class)."""
    import comfy.ops
    import tiny_checkpoint
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    with torch.device("meta"):
        unet = UNetModel(**tiny_checkpoint.UNET_CONFIG, operations=comfy.ops.disable_weight_init)
    return UpsamplerSet.create(derive_taps(unet), emb_dim(unet), family, variant)


def test_tuned_graph_runs_on_the_server(pack, comfy_server, client, tiny_checkpoint):
    from comfy_client import ExecutionFailed
    from self_cascade.upsampler.convert import SDXL_EMB_DIM, SDXL_TAPS
    from self_cascade.upsampler.fileformat import save_upsamplers
    from self_cascade.upsampler.modules import UpsamplerSet

    folder = comfy_server.base_dir / "models" / "self_cascade"
    folder.mkdir(parents=True, exist_ok=True)
    save_upsamplers(str(folder / "tiny_light.safetensors"), _tiny_checkpoint_set("light"))
    save_upsamplers(str(folder / "xl.safetensors"), UpsamplerSet.create(SDXL_TAPS, SDXL_EMB_DIM, "SDXL", "light"))
    info = client.object_info()
    options = info["SelfCascadeUpsamplerLoader"]["input"]["required"]["upsampler_name"]
    assert "tiny_light.safetensors" in str(options)
    entry = client.run(_graph(tiny_checkpoint, "tiny_light.safetensors"), timeout=300)
    img = entry["outputs"]["11"]["images"][0]
    assert (comfy_server.base_dir / "output" / img["subfolder"] / img["filename"]).exists()
    with pytest.raises(ExecutionFailed, match="SelfCascadeApplyUpsamplers.*trained for a SDXL model, but the model is SD15"):
        client.run(_graph(tiny_checkpoint, "xl.safetensors"), timeout=300)
