"""Which part of the pivot one model call sees: the whole latent, an area crop, or a tile.

ComfyUI calls the model on a crop of the sampled latent for area conditioning (``samplers._calc_cond_batch``
narrows x and every ``model_conds`` entry to the area), and tiled samplers call it on tiles. The pivot must be
cropped to the same region, never resized whole onto the crop.

The carrier: a CALC_COND_BATCH wrapper (``nodes/wrapper.py``, where x is still the whole latent of the pass) puts
:func:`full_grid`, the full latent's (row, column) indices, into every cond as a ``CONDNoiseShape``; ComfyUI crops
it with the area (``conds.CONDNoiseShape.process_cond``), as TiledDiffusion's MultiDiffusion and Mixture of
Diffusers crop every 4-D cond tensor with their tiles. It reaches the DIFFUSION_MODEL wrapper as the keyword
``GRID_KEY``, and :func:`pivot_for` gathers the pivot at those indices on the device (per row: a batch may mix
areas of one shape), without reading a value back to the host.

What cannot be known: a sampler that runs a whole sampling pass per tile (Ultimate SD Upscale, TiledKSampler)
gives the model a "full" latent that is only a tile. Where that latent is smaller than the pivot on a side
(Self-Cascade only goes up in size) :func:`is_tile` says so and the wrapper runs the plain model, with one
warning per run; a tile at least as large as the pivot cannot be told from a whole image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import SelfCascadeError

__all__ = ["GRID_KEY", "fit", "full_grid", "half_size", "is_tile", "pair_pivot", "pivot_for", "resized"]

#: The model-call keyword (a ``model_conds`` entry) that carries the grid.
GRID_KEY = "self_cascade_grid"


def pair_pivot(p: torch.Tensor, rows: int, n_chunks: int) -> torch.Tensor:
    """The pivot batched like x: ``rows`` = ``n_chunks`` cond/uncond chunks of the sampled batch each.

    A batch-1 pivot serves every row; a pivot of the sampled batch is repeated once per chunk
    (row i of every chunk gets pivot i). Any other batch is an error: checking ``b == rows`` alone
    would pair a batch-2 pivot of a batch-1 sample under CFG as cond -> pivot 0, uncond -> pivot 1.
    """
    b, n_chunks = p.shape[0], max(int(n_chunks), 1)
    if b == 1:
        return p.expand(rows, -1, -1, -1)
    if rows % n_chunks == 0 and b == rows // n_chunks:
        return p if n_chunks == 1 else p.repeat(n_chunks, 1, 1, 1)
    raise SelfCascadeError(f"pivot batch {b} does not fit the sampled batch {rows / n_chunks:g} "
                           f"(x {n_chunks} cond/uncond chunks); use a pivot of batch 1 or of the sampled batch.")


def fit(a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``a`` at h's spatial size and dtype (e.g. when Deep Shrink shrank h, or odd sizes)."""
    if a.shape[-2:] != h.shape[-2:]:
        a = F.interpolate(a, size=h.shape[-2:], mode="bilinear", align_corners=False)
    return a.to(h.dtype)


def half_size(size) -> tuple[int, int]:
    """The pivot's size for a latent of ``size`` (h, w): half of it, rounded up."""
    return (int(size[0]) + 1) // 2, (int(size[1]) + 1) // 2


def resized(p: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``p`` at ``size`` (bilinear; antialiased where it shrinks)."""
    if tuple(p.shape[-2:]) == tuple(size):
        return p
    shrink = p.shape[-2] > size[0] or p.shape[-1] > size[1]
    return F.interpolate(p, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def is_tile(pivot: torch.Tensor, full: tuple[int, int]) -> bool:
    """True where the latent of the pass is smaller than the pivot on a side: a tile, not a Self-Cascade stage."""
    return pivot.shape[-2] > full[0] or pivot.shape[-1] > full[1]


def pivot_for(scaled: torch.Tensor, x: torch.Tensor, n_chunks: int, full: tuple[int, int] | None,
              grid: torch.Tensor | None) -> torch.Tensor:
    """The pivot for this call at half x's size, batched like x (``scaled`` is already on x's device/dtype).

    Whole latent (no grid, or x is the full size): the pivot resized to half x's size. A crop: the pivot at
    half the full size, nearest x2 to the full grid, gathered at the crop's (row, column) indices and pooled
    2x2, so an even crop of an even latent gets exactly its part of the whole-latent pivot.
    """
    if grid is None or full is None or tuple(x.shape[-2:]) == tuple(full):
        return pair_pivot(resized(scaled, half_size(x.shape[-2:])), x.shape[0], n_chunks)
    whole = pair_pivot(resized(scaled, half_size(full)), x.shape[0], n_chunks)
    up = F.interpolate(whole, scale_factor=2.0, mode="nearest")
    b, c, _, width = up.shape
    rows, cols = grid[:, 0].long(), grid[:, 1].long()  # (B, h, w) indices into the full latent
    index = (rows * width + cols).flatten(1)[:, None, :].expand(b, c, -1)
    crop = torch.gather(up.flatten(2), 2, index).view(b, c, *grid.shape[-2:])
    if crop.shape[-2] % 2 or crop.shape[-1] % 2:
        crop = F.pad(crop, (0, crop.shape[-1] % 2, 0, crop.shape[-2] % 2), mode="replicate")
    return F.avg_pool2d(crop, 2)


def full_grid(x: torch.Tensor) -> torch.Tensor:
    """(1, 2, H, W) int32: the (row, column) of every cell of x's latent, on x's device."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device, dtype=torch.int32)[:, None].expand(h, w)
    cols = torch.arange(w, device=x.device, dtype=torch.int32)[None, :].expand(h, w)
    return torch.stack((rows, cols))[None]
