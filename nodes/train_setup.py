"""Training set-up: TrainConfig, encoded training pairs (x0, pivot), conditionings, batch sampling.

Data path (Algorithm 1): each image is trimmed (centred) to a size that divides into the
stage, encoded ONCE at full size (x0) and once downsampled by ``scale`` (the pivot,
E(Downsample(x0))); every step then takes an aligned random crop of both in latent space.
Crop-of-encoding equals encoding-of-crop up to the VAE's border context; encoding once makes a
step cost only the UNet. ``pivot_mode="generated"`` replaces the pivot by a base-model sample at
the pivot size from the image's caption (the official code's "pseudo" pivot), generated once
per image before training.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..upsampler.pivot import target_size
from .common import SelfCascadeError
from .train_data import TrainingImages, check_sizes
from .train_loop import Batch

logger = logging.getLogger(__name__)

#: Pivot modes (name -> what the pivot of a training pair is).
PIVOT_MODES: dict[str, str] = {
    "downsample": "E(Downsample(x0)): the paper's Algorithm 1",
    "generated": "a base-model sample at the pivot size from the caption: the official code's pseudo pivot",
}


@dataclass
class TrainConfig:
    """Settings of one training run (Algorithm 1; defaults follow the paper / official code)."""

    width: int = 1024  # training crop (high-res target) in pixels
    height: int = 1024
    scale: float = 2.0  # per side; pivot = crop / scale
    steps: int = 1000
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    batch_size: int = 1
    K: float = 700.0  # t ~ U{floor(end_timestep)+1 .. K}
    end_timestep: float = 100.0
    pivot_mode: str = "downsample"
    variant: str = "official"
    variant_size: int = 0
    seed: int = 0
    checkpoint_every: int = 100
    caption_dropout: float = 0.0
    gradient_checkpointing: str = "auto"  # auto: on for CUDA, off for CPU; "on" / "off"
    mixed_precision: str = "auto"  # auto: bf16 autocast on CUDA when supported, else fp32
    latent_cell: int = 8  # pixels per latent cell of the encoder
    generated_steps: int = 20
    generated_cfg: float = 5.0
    log_every: int = 10

    def validate(self) -> None:
        checks = [
            (self.steps >= 1, "steps must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.learning_rate > 0 and math.isfinite(self.learning_rate), "learning_rate must be > 0"),
            (self.scale > 1.0 and math.isfinite(self.scale), "scale must be > 1 (the stage goes up in size)"),
            (0 <= self.end_timestep < self.K <= 999, "need 0 <= end_timestep < K <= 999"),
            (self.pivot_mode in PIVOT_MODES, f"pivot_mode must be one of {sorted(PIVOT_MODES)}"),
            (0.0 <= self.caption_dropout <= 1.0, "caption_dropout must be within 0..1"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0 (0 = only at the end / on cancel)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SelfCascadeError(msg)

    def latent_sizes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((crop_h, crop_w), (pivot_h, pivot_w)) in latent cells; error when the sizes do not divide."""
        cell = self.latent_cell
        if self.width % cell or self.height % cell:
            raise SelfCascadeError(f"width/height {self.width}x{self.height} must be multiples of {cell} pixels.")
        crop = (self.height // cell, self.width // cell)
        pivot = (max(1, round(crop[0] / self.scale)), max(1, round(crop[1] / self.scale)))
        if target_size(*pivot, self.scale) != crop:
            raise SelfCascadeError(
                f"{self.width}x{self.height} px is not reachable from a whole-latent pivot with scale {self.scale}; "
                f"use e.g. {round(pivot[1] * self.scale) * cell}x{round(pivot[0] * self.scale) * cell}.")
        return crop, pivot


@dataclass
class EncodedImage:
    """One image as training material: x0 latent (full trimmed image) and its pivot latent."""

    x0: torch.Tensor  # (C, th, tw), LATENT space (not process_latent_in-scaled)
    pivot: torch.Tensor  # (C, ph, pw); for "generated" mode exactly the pivot crop size
    cond: int  # index into the conditioning slices


def _encode(encode: Callable, pixels: torch.Tensor, channels: int, what: str) -> torch.Tensor:
    with torch.no_grad():  # the VAE is frozen: no graph through it
        out = encode(pixels)
    if isinstance(out, dict):
        out = out["samples"]
    if not torch.is_tensor(out) or out.ndim != 4:
        raise SelfCascadeError(f"the VAE returned {type(out).__name__} for {what}; expected a (B, C, H, W) latent.")
    if out.shape[1] != channels:
        raise SelfCascadeError(f"the VAE makes {out.shape[1]}-channel latents but the model takes {channels} "
                               "channels: connect the VAE that belongs to this model.")
    return out.detach().float().cpu()


def encode_images(data: TrainingImages, encode: Callable, cfg: TrainConfig, channels: int,
                  cond_of_image: list[int]) -> list[EncodedImage]:
    """Trim, encode (x0 and E(Downsample(x0))) every image; see the module docstring."""
    check_sizes(data, cfg.height, cfg.width)
    cell, out = cfg.latent_cell, []
    for i, img in enumerate(data.images):
        ph = int(img.shape[0] // (cell * cfg.scale))
        pw = int(img.shape[1] // (cell * cfg.scale))
        th, tw = target_size(ph, pw, cfg.scale)
        th, tw = min(th, img.shape[0] // cell), min(tw, img.shape[1] // cell)
        top, left = (img.shape[0] - th * cell) // 2, (img.shape[1] - tw * cell) // 2
        trimmed = img[top:top + th * cell, left:left + tw * cell].unsqueeze(0)
        x0 = _encode(encode, trimmed, channels, data.names[i])
        pivot = None
        if cfg.pivot_mode == "downsample":
            small = F.interpolate(trimmed.movedim(-1, 1), size=(ph * cell, pw * cell), mode="bicubic",
                                  align_corners=False, antialias=True).clamp(0, 1).movedim(1, -1)
            pivot = _encode(encode, small, channels, data.names[i])[0]
        out.append(EncodedImage(x0=x0[0], pivot=pivot, cond=cond_of_image[i]))
    return out


def generate_pivots(model, items: list[EncodedImage], conds: list, empty, cfg: TrainConfig, channels: int) -> None:
    """``pivot_mode="generated"``: one base-model sample per image at the pivot size from its caption."""
    import comfy.sample

    _, (ph, pw) = cfg.latent_sizes()
    negative = empty if empty is not None else conds[0]
    cfg_scale = cfg.generated_cfg if empty is not None else 1.0
    for i, item in enumerate(items):
        latent = torch.zeros(1, channels, ph, pw)
        seed = cfg.seed + 7919 * (i + 1)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            out = comfy.sample.sample(model, noise, cfg.generated_steps, cfg_scale, "euler", "normal",
                                      conds[item.cond], negative, latent, seed=seed, disable_pbar=True)
        item.pivot = out[0].float().cpu()


def split_conditioning(positive, n_images: int) -> tuple[list, list[int]]:
    """Per-image or shared CONDITIONING -> (list of CONDITIONINGs, image -> conditioning index)."""
    if not isinstance(positive, (list, tuple)) or not positive:
        raise SelfCascadeError("'positive' must be a CONDITIONING (or one per image).")
    shared = isinstance(positive[0], (list, tuple)) and len(positive[0]) == 2 and torch.is_tensor(positive[0][0])
    if shared:
        return [positive], [0] * n_images
    if len(positive) != n_images:
        raise SelfCascadeError(f"{len(positive)} conditionings for {n_images} images; give one for all or one per image.")
    return list(positive), list(range(n_images))


class BatchSampler:
    """Draw a training batch from a seeded generator: images, aligned crops, caption dropout."""

    def __init__(self, items: list[EncodedImage], cfg: TrainConfig, empty_index: int | None,
                 process_latent_in: Callable, generator: torch.Generator):
        self.items, self.cfg, self.empty_index = items, cfg, empty_index
        self.latent_in, self.gen = process_latent_in, generator
        self.crop, self.pivot = cfg.latent_sizes()

    def __call__(self) -> Batch:
        g, cfg = self.gen, self.cfg
        (th, tw), (ph, pw) = self.crop, self.pivot
        idx = torch.randint(0, len(self.items), (cfg.batch_size,), generator=g).tolist()
        x0s, pivots, conds = [], [], []
        for i in idx:
            item = self.items[i]
            if cfg.pivot_mode == "downsample":  # aligned pair: pivot cell q <-> target cell round(q * scale)
                qy = int(torch.randint(0, item.pivot.shape[1] - ph + 1, (1,), generator=g))
                qx = int(torch.randint(0, item.pivot.shape[2] - pw + 1, (1,), generator=g))
                py = min(round(qy * cfg.scale), item.x0.shape[1] - th)
                px = min(round(qx * cfg.scale), item.x0.shape[2] - tw)
                pivots.append(item.pivot[:, qy:qy + ph, qx:qx + pw])
            else:
                py = int(torch.randint(0, item.x0.shape[1] - th + 1, (1,), generator=g))
                px = int(torch.randint(0, item.x0.shape[2] - tw + 1, (1,), generator=g))
                pivots.append(item.pivot)
            x0s.append(item.x0[:, py:py + th, px:px + tw])
            drop = float(torch.rand((), generator=g)) < cfg.caption_dropout
            conds.append(self.empty_index if drop and self.empty_index is not None else item.cond)
        x0 = self.latent_in(torch.stack(x0s))
        return Batch(x0=x0, pivot=torch.stack(pivots), cond_index=conds)
