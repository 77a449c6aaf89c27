"""Convert the official SDXL ``upsampler_only.pth`` (a Lightning state dict) to our set.

Official keys: ``unet.feature_upsampler{i}.{j}.{in_layers.0, in_layers.2, emb_layers.1,
out_layers.0, out_layers.3}.{weight,bias}`` with i = 0..3 (taps) and j = 0 (the upsampling
ResBlock) or 1 -- 80 tensors. Ours: ``ups.{i}.blocks.{j}.<same suffix>``.
"""
from __future__ import annotations

import os
import re

import torch

from .modules import UpsamplerSet
from .taps import Tap

#: SDXL taps in ComfyUI block names (diffusers down_blocks[0..2] outputs and mid block).
SDXL_TAPS = [Tap(("input", 3), 320, 2), Tap(("input", 6), 640, 4), Tap(("input", 8), 1280, 4),
             Tap(("middle", 0), 1280, 4)]
SDXL_EMB_DIM = 1280
SDXL_FAMILY = "SDXL"
SUFFIXES = ("in_layers.0", "in_layers.2", "emb_layers.1", "out_layers.0", "out_layers.3")
_KEY = re.compile(r"^(?:unet\.|model\.|module\.)*feature_upsampler(\d+)\.(\d+)\.(.+)$")


def official_key(i: int, j: int, suffix: str, param: str) -> str:
    return f"unet.feature_upsampler{i}.{j}.{suffix}.{param}"


def convert_state_dict(sd: dict[str, torch.Tensor], source: str = "state dict") -> UpsamplerSet:
    """Map an official state dict onto a fresh official-variant SDXL set; strict about keys and shapes."""
    if isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    with torch.device("meta"):  # shapes only; the weights are assigned from the file below
        uset = UpsamplerSet.create(SDXL_TAPS, SDXL_EMB_DIM, SDXL_FAMILY, "official", K=700.0,
                                   end_timestep=100.0, scale=2.0, steps=0,
                                   extra={"source": os.path.basename(source)})
    ours = uset.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    ignored = []
    for key, value in sd.items():
        m = _KEY.match(key)
        if not m:
            ignored.append(key)
            continue
        new = f"ups.{m.group(1)}.blocks.{m.group(2)}.{m.group(3)}"
        if new not in ours:
            raise ValueError(f"{source}: unexpected upsampler tensor {key!r} (no counterpart {new!r})")
        if not torch.is_tensor(value) or tuple(value.shape) != tuple(ours[new].shape):
            shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise ValueError(f"{source}: tensor {key!r} has shape {shape}, expected {tuple(ours[new].shape)} "
                             "(is this the SDXL upsampler_only.pth?)")
        mapped[new] = value.detach().float().contiguous()
    missing = sorted(set(ours) - set(mapped))
    if missing:
        raise ValueError(f"{source}: {len(missing)} of {len(ours)} upsampler tensors missing, e.g. "
                         f"{missing[:3]} ({len(ignored)} keys without 'feature_upsampler' were ignored)")
    for k, v in mapped.items():
        if not torch.isfinite(v).all():
            raise ValueError(f"{source}: tensor {k!r} contains NaN or Inf")
    uset.load_state_dict(mapped, assign=True)
    return uset


def load_official_pth(path: str) -> UpsamplerSet:
    """Read ``upsampler_only.pth`` safely (weights_only) and convert it."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle refused or corrupt: say which file
        raise ValueError(f"cannot read '{path}' as a weights-only torch file: {e}") from None
    if not isinstance(sd, dict):
        raise ValueError(f"'{path}' holds a {type(sd).__name__}, not a state dict")
    return convert_state_dict(sd, source=path)
