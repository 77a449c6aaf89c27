"""Pivot upsampling: resize the previous stage's clean latent to the next stage's size.

In the paper (Sec. 3.2, Eq. 6) the pivot ``up(z0_prev)`` is the previous stage's result
upsampled (bilinear in the paper, bicubic in the official code); it is then re-noised to
step K. Resizing happens on the spatial axes only, so 4-D image latents ``(B, C, H, W)`` and
5-D video latents ``(B, C, T, H, W)`` are both handled.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def _interp(mode: str, antialias: bool = False) -> Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]:
    def run(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        kwargs = {} if mode in ("nearest", "nearest-exact", "area") else {"align_corners": False}
        if antialias:
            kwargs["antialias"] = True
        return F.interpolate(x, size=size, mode=mode, **kwargs)

    return run


#: Registry of upscale methods (name -> function(x4d, (h, w))). The first is the default.
UPSCALE_METHODS: dict[str, Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]] = {
    "bicubic": _interp("bicubic"),  # official code
    "bilinear": _interp("bilinear"),  # paper
    "nearest-exact": _interp("nearest-exact"),
    "area": _interp("area"),
}


def target_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Latent ``(h, w)`` after scaling each side by ``scale`` (rounded to the nearest cell)."""
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number, got {scale}")
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_latent(latent: torch.Tensor, size: tuple[int, int], method: str = "bicubic") -> torch.Tensor:
    """Resize a 4-D ``(B, C, H, W)`` or 5-D ``(B, C, T, H, W)`` latent to spatial ``size``.

    Returns a new tensor (the input is never modified), same dtype as the input.
    """
    if method not in UPSCALE_METHODS:
        raise ValueError(f"unknown upscale method {method!r}; choose one of {sorted(UPSCALE_METHODS)}")
    fn = UPSCALE_METHODS[method]
    dtype = latent.dtype
    x = latent.float() if dtype in (torch.float16, torch.bfloat16) else latent
    if x.ndim == 4:
        out = fn(x, size)
    elif x.ndim == 5:
        b, c, t, h, w = x.shape
        flat = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        out = fn(flat, size).reshape(b, t, c, *size).permute(0, 2, 1, 3, 4).contiguous()
    else:
        raise ValueError(f"expected a 4-D or 5-D latent, got shape {tuple(latent.shape)}")
    return out.to(dtype)


#: Crop choices of Upscale (ComfyUI's Upscale Latent offers the same two).
CROP_METHODS = ("disabled", "center")


def center_crop_box(height: int, width: int, aspect: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centred part of a ``height`` x ``width`` grid with the aspect
    ratio ``aspect`` = (width, height), in whole cells, by the rule of ComfyUI's ``common_upscale``
    (crop "center"): the side that is too long loses round(excess / 2) cells at each end."""
    old, new = width / height, aspect[0] / aspect[1]
    top = left = 0
    if old > new:
        left = round((width - width * new / old) / 2)
    elif old < new:
        top = round((height - height * old / new) / 2)
    return top, left, height - 2 * top, width - 2 * left


def center_crop(latent: torch.Tensor, aspect: tuple[int, int]) -> torch.Tensor:
    """The centred crop (:func:`center_crop_box`) of a 4-D or 5-D latent's last two axes (a view, not a copy)."""
    top, left, h, w = center_crop_box(latent.shape[-2], latent.shape[-1], aspect)
    return latent.narrow(-2, top, h).narrow(-1, left, w)
