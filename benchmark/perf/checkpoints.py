"""Random-weight checkpoint files in the layouts users download, for the user-path benchmark (nothing is
downloaded; cost does not depend on the weights).

- :func:`write_checkpoint`: a single-file SD1.5 or SDXL checkpoint as ComfyUI's stock ``CheckpointLoaderSimple``
  reads it: UNet, text encoder(s) and VAE, key names from ComfyUI's own save conversion
  (``BaseModel.state_dict_for_saving``) of its classes built on the ``meta`` device, so the file follows the
  host's classes. ``layout="full"``: the real UNets (860 M / 2567 M parameters, ``perf.models``);
  ``layout="stripped"``: a one-level SD1.5 UNet that ComfyUI still detects as SD1.5 (320 channels,
  context 768; a CPU check of the same path). Text encoders and VAE are always full size (ComfyUI builds
  them from fixed configs). Weights fp16, seeded, drawn on ``device`` (the GPU when there is one).
- :func:`write_official_pth`: the official SDXL ``upsampler_only.pth`` layout (a Lightning-style dict whose
  ``state_dict`` holds ``unet.feature_upsampler{i}.{j}.*``, 145.5 M parameters), the file the shipped SDXL
  workflow's loader converts once (weights-only) on first use.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from . import models as pm

#: SD's KL-f8 autoencoder (SDXL's VAE has the same layout), as ComfyUI builds it for these checkpoints
VAE_CONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
              "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
#: a one-level SD1.5 UNet: ComfyUI's detection reads 320 channels, context 768, no label embedding
STRIPPED_SD15 = dict(pm.SD15_UNET, num_res_blocks=[1], channel_mult=[1], transformer_depth=[1],
                     transformer_depth_output=[1, 1], transformer_depth_middle=-1, image_size=32)
LAYOUTS = {("SD15", "full"): pm.SPECS["sd15"], ("SDXL", "full"): pm.SPECS["sdxl"],
           ("SD15", "stripped"): dict(pm.SPECS["sd15"], unet=STRIPPED_SD15, heads=dict(num_heads=8, num_head_channels=-1))}


def checkpoint_layout(family: str, layout: str = "full") -> tuple[dict[str, tuple], dict]:
    """(name -> shape of every random tensor, fixed tensors) of a single-file checkpoint of ``family``."""
    import comfy.ldm.models.autoencoder as autoencoder
    import torch

    spec = LAYOUTS[(family, layout)]
    model = pm.build_model(spec, "meta", dtype=torch.float16).model
    with torch.device("meta"):
        clip = model.model_config.clip_target().clip(device="meta").state_dict()
        vae = autoencoder.AutoencoderKL(ddconfig=dict(VAE_CONFIG), embed_dim=4).state_dict()
    sd = model.state_dict_for_saving(clip, vae)
    fixed = {k: v.contiguous() for k, v in sd.items() if v.device.type != "meta"}  # e.g. CLIP position ids
    return {k: tuple(v.shape) for k, v in sd.items() if k not in fixed}, fixed


def _draw(name: str, shape: tuple, g, device):
    """Fan-in scaled normal for weights (UNet x0.5, its last conv x0.005: bounded eps), ~1 for norm scales,
    small biases."""
    import torch

    if len(shape) >= 2:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        scale = 0.5 if name.startswith("model.diffusion_model.") else 1.0
        scale *= 0.01 if name.startswith("model.diffusion_model.out.2.") else 1.0
        return torch.randn(shape, generator=g, device=device) * (scale / fan_in) ** 0.5
    return (1.0 if name.endswith("weight") else 0.0) + 0.02 * torch.randn(shape, generator=g, device=device)


def _save(path: Path, sd: dict, metadata: dict) -> dict:
    import safetensors.torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    safetensors.torch.save_file(sd, str(tmp), metadata=metadata)
    tmp.replace(path)
    return dict(bytes=path.stat().st_size, params=sum(t.numel() for t in sd.values()))


def write_checkpoint(path: str | Path, family: str, layout: str = "full", seed: int = 0, device: str = "cpu") -> dict:
    """Write the checkpoint (fp16 safetensors) to ``path``; returns {seconds, bytes, params}."""
    import torch

    t0 = time.perf_counter()
    shapes, fixed = checkpoint_layout(family, layout)
    g = torch.Generator(device=device).manual_seed(seed)
    sd = {k: _draw(k, s, g, device).to(torch.float16).cpu() for k, s in sorted(shapes.items())}
    sd.update(fixed)
    info = _save(Path(path), sd, {"comment": f"random {family} checkpoint ({layout} layout), seed {seed}"})
    return dict(info, seconds=time.perf_counter() - t0)


def write_official_pth(path: str | Path, seed: int = 0) -> dict:
    """The official SDXL upsampler set layout, random weights (fp32), saved with ``torch.save`` (tensors and
    plain types only: the pack's weights-only reader accepts it)."""
    import torch
    from self_cascade.upsampler.convert import SDXL_EMB_DIM, SDXL_FAMILY, SDXL_TAPS
    from self_cascade.upsampler.modules import UpsamplerSet

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    uset = UpsamplerSet.create(SDXL_TAPS, SDXL_EMB_DIM, SDXL_FAMILY, "official")
    ours = re.compile(r"^ups\.(\d+)\.blocks\.(\d+)\.(.+)$")
    sd = {ours.sub(r"unet.feature_upsampler\1.\2.\3", k): v.detach().clone() for k, v in uset.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "global_step": 0, "state_dict": sd}, path)
    return dict(bytes=path.stat().st_size, params=sum(v.numel() for v in sd.values()),
                seconds=time.perf_counter() - t0)
