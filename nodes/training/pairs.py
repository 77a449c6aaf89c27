"""Training pairs (x0, pivot), their conditionings, and the seeded batch sampler.

Data path (Algorithm 1): each image is trimmed (centred) to a size that divides into the
stage, encoded ONCE at full size (x0) and once downsampled by ``scale`` (the pivot,
E(Downsample(x0))); every step then takes an aligned random crop of both in latent space.
Crop-of-encoding equals encoding-of-crop up to the VAE's border context; encoding once makes a
step cost only the UNet. ``pivot_mode="generated"`` replaces the pivot by a base-model sample at
the pivot size from the image's caption (the official code's "pseudo" pivot), generated once
per image before training.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...upsampler.pivot import target_size
from ..common import SelfCascadeError
from .config import TrainConfig
from .data import TrainingImages, check_sizes


@dataclass
class EncodedImage:
    """One image as training material: x0 latent (full trimmed image) and its pivot latent."""

    x0: torch.Tensor  # (C, th, tw), LATENT space (not process_latent_in-scaled)
    pivot: torch.Tensor | None  # (C, ph, pw); for "generated" mode exactly the pivot crop size
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


def encode_image(img: torch.Tensor, encode: Callable, cfg: TrainConfig, channels: int,
                 name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Trim one ``(H, W, 3)`` image and encode it: (x0 (C, th, tw), pivot (C, ph, pw) or None when
    the pivot is generated later). See the module docstring."""
    cell = cfg.latent_cell
    ph = int(img.shape[0] // (cell * cfg.scale))
    pw = int(img.shape[1] // (cell * cfg.scale))
    th, tw = target_size(ph, pw, cfg.scale)
    th, tw = min(th, img.shape[0] // cell), min(tw, img.shape[1] // cell)
    top, left = (img.shape[0] - th * cell) // 2, (img.shape[1] - tw * cell) // 2
    trimmed = img[top:top + th * cell, left:left + tw * cell].unsqueeze(0)
    x0 = _encode(encode, trimmed, channels, name)[0]
    if cfg.pivot_mode != "downsample":
        return x0, None
    small = F.interpolate(trimmed.movedim(-1, 1), size=(ph * cell, pw * cell), mode="bicubic",
                          align_corners=False, antialias=True).clamp(0, 1).movedim(1, -1)
    return x0, _encode(encode, small, channels, name)[0]


def encode_images(data: TrainingImages, encode: Callable, cfg: TrainConfig, channels: int,
                  cond_of_image: list[int]) -> list[EncodedImage]:
    """Check sizes, then trim and encode every image (x0 and E(Downsample(x0)))."""
    check_sizes(data, cfg.height, cfg.width)
    out = []
    for i, img in enumerate(data.images):
        x0, pivot = encode_image(img, encode, cfg, channels, data.names[i])
        out.append(EncodedImage(x0=x0, pivot=pivot, cond=cond_of_image[i]))
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


@dataclass
class Batch:
    """One optimisation step's data for the whole global batch (every process draws the same one
    and trains its own rows): clean latents (model space), pivots (LATENT space), conditioning
    indices, timesteps (out of 1000) and noise."""

    x0: torch.Tensor
    pivot: torch.Tensor
    cond_index: list[int]
    timesteps: torch.Tensor
    noise: torch.Tensor


class BatchSampler:
    """Draw a global training batch from a seeded generator: images, aligned crops, caption dropout,
    then timesteps t ~ U{floor(end_timestep)+1 .. K} and the noise, in that order. The draws do not
    depend on how many processes share the batch, so any process count sees the same samples."""

    def __init__(self, items: Sequence[EncodedImage], cfg: TrainConfig, empty_index: int | None,
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
            x0, pivot = item.x0, item.pivot
            if cfg.pivot_mode == "downsample":  # aligned pair: pivot cell q <-> target cell round(q * scale)
                qy = int(torch.randint(0, pivot.shape[1] - ph + 1, (1,), generator=g))
                qx = int(torch.randint(0, pivot.shape[2] - pw + 1, (1,), generator=g))
                py = min(round(qy * cfg.scale), x0.shape[1] - th)
                px = min(round(qx * cfg.scale), x0.shape[2] - tw)
                pivots.append(pivot[:, qy:qy + ph, qx:qx + pw])
            else:
                py = int(torch.randint(0, x0.shape[1] - th + 1, (1,), generator=g))
                px = int(torch.randint(0, x0.shape[2] - tw + 1, (1,), generator=g))
                pivots.append(pivot)
            x0s.append(x0[:, py:py + th, px:px + tw])
            drop = float(torch.rand((), generator=g)) < cfg.caption_dropout
            conds.append(self.empty_index if drop and self.empty_index is not None else item.cond)
        x0 = self.latent_in(torch.stack(x0s))
        t = torch.randint(int(cfg.end_timestep) + 1, int(cfg.K) + 1, (len(idx),), generator=g).float()
        noise = torch.randn(x0.shape, generator=g)
        return Batch(x0=x0, pivot=torch.stack(pivots), cond_index=conds, timesteps=t, noise=noise)
