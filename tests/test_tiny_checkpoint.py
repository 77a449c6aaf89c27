"""The test-built SD1.5-shaped checkpoint loads through the stock loader and makes images on the real server."""
from __future__ import annotations

import time

import numpy as np
from PIL import Image


def _txt2img(ckpt: str, text: str, seed: int, size: int = 64, steps: int = 2, prefix: str = "tinyckpt") -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def _image(server, entry: dict, node: str = "7") -> np.ndarray:
    info = entry["outputs"][node]["images"][0]
    path = server.base_dir / "output" / info["subfolder"] / info["filename"]
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_checkpoint_shape_is_sd15_for_the_stock_detector(pack):
    """ComfyUI's own detector reads the UNet keys as SD1.x; CLIP-L and the KL-f8 VAE are complete."""
    import comfy.model_detection
    import tiny_checkpoint

    shapes = tiny_checkpoint.checkpoint_shapes()
    unet = {k: v for k, v in shapes.items() if k.startswith("model.diffusion_model.")}
    n_unet = sum(int(np.prod(s)) for s in unet.values())
    assert 15e6 < n_unet < 25e6, n_unet  # 21.0 M: one level + a 1-resblock middle block
    cfg = comfy.model_detection.model_config_from_unet(
        {k: _Shape(v) for k, v in shapes.items()}, "model.diffusion_model.")
    assert cfg is not None and type(cfg).__name__ == "SD15", cfg
    assert "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight" in shapes
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in shapes


class _Shape:
    """Just enough of a tensor for model detection (shape, ndim, dtype)."""

    def __init__(self, shape):
        self.shape = shape
        self.ndim = len(shape)
        import torch

        self.dtype = torch.float16


def test_stock_loader_to_image_through_server(comfy_server, client, tiny_checkpoint_file, tiny_checkpoint):
    """CheckpointLoaderSimple -> CLIPTextEncode -> KSampler -> VAEDecode -> SaveImage on the live server."""
    t0 = time.perf_counter()
    entry = client.run(_txt2img(tiny_checkpoint, "a red cat", seed=1), timeout=300)
    first = time.perf_counter() - t0
    a = _image(comfy_server, entry)
    assert a.shape == (64, 64, 3)
    assert a.std() > 1.0, "decoded image is flat: the VAE or the sampler produced nothing"
    # the text encoder is live: another prompt (same seed) gives another image
    t0 = time.perf_counter()
    b = _image(comfy_server, client.run(_txt2img(tiny_checkpoint, "a blue house at night", seed=1), timeout=300))
    second = time.perf_counter() - t0
    assert np.abs(a - b).mean() > 0.1, "prompt had no effect on the image"
    log = comfy_server.log()
    assert "clip missing" not in log, log[-2000:]
    print(f"tiny checkpoint: {tiny_checkpoint_file.stat().st_size / 1e6:.0f} MB; "
          f"first run (load + sample) {first:.1f}s, second run {second:.1f}s")


def test_sdxl_checkpoint_shape_is_sdxl_for_the_stock_detector(pack):
    """The SDXL-shaped layout: ComfyUI's detector reads the UNet keys as SDXL (label embedding over 2816);
    CLIP-L and CLIP-G are in an SDXL checkpoint's key layout, complete, and the UNet is small."""
    import comfy.model_detection
    import comfy.supported_models
    import tiny_checkpoint

    shapes, fixed = tiny_checkpoint.sdxl_checkpoint_parts()
    unet = {k: v for k, v in shapes.items() if k.startswith("model.diffusion_model.")}
    n_unet = sum(int(np.prod(s)) for s in unet.values())
    assert 100e6 < n_unet < 200e6, n_unet  # 154 M, SDXL's is 2.6 G
    assert shapes["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    cfg = comfy.model_detection.model_config_from_unet({k: _Shape(v) for k, v in unet.items()}, "model.diffusion_model.")
    assert type(cfg) is comfy.supported_models.SDXL, cfg
    assert "conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_proj.weight" in shapes  # CLIP-G, 32 layers
    assert "conditioner.embedders.1.model.text_projection" in shapes  # the pooled output SDXL's ADM needs
    assert "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc2.weight" in shapes
    assert list(fixed) == ["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"]
