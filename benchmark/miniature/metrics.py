"""Benchmark metrics (no pretrained network): composition, Laplacian-pyramid SWD, base consistency, detail, stripes.

All functions take ComfyUI IMAGE tensors (N, H, W, 3) in 0..1.
- Composition: objects = connected components of HSV saturation > 0.4 covering >= 1% of the
  image; the score is the share of samples with exactly the scene's count (1). Resize-invariant:
  every image is first area-downsampled to the base size (``at``), so a method is not scored on
  how its edges alias at its own resolution (counted natively, the bicubic-upsampled base sample
  scored 0.88 against the base's own 0.96). 95% interval: Wilson score (``wilson``). A strict variant
  counts components down to 0.25% of the image (small spurious dots). A saturated region over
  MAX_AREA of the image is a background, not an object (a scene's object covers at most ~20%
  and its background is low-saturation by construction): such a sample has no valid
  object/background split and counts as -1, i.e. a failure. (The first committed table lacked
  this rule and scored saturated-background samples as "one object"; see docs/BENCHMARK.md.)
- Fidelity: sliced Wasserstein distance between 7x7 patch sets of Laplacian-pyramid levels
  (Karras et al. 2018), reported for the coarse levels (short side <= the base size, like FID_r)
  and for the finest level (like pFID_r). Values x1e3, lower is better.
- Base consistency: SWD (all levels) between generated-then-downsampled images and base-size
  samples (like FID_b).
- Pivot agreement: the output's object mask area-downsampled to the base size (coverage > 0.5)
  against the base sample's object mask, IoU per sample (``pivot_iou``); mean with a bootstrap
  95% interval (``bootstrap_mean``). 1 = the output keeps the base sample's layout exactly.
- Detail: energy of the band that averages away at base size (image minus its base-size
  area-downsample, re-upsampled) inside the eroded object mask, relative to real renders (1.0 =
  as much fine detail as the ground truth).
- Stripes: the part of that band that is the scenes' own texture (the stripe wave fitted inside
  objects, ``stripe_energy``), relative to real renders; grain of the same energy scores near 0.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

SAT_THRESHOLD = 0.4
MIN_AREA = 0.01
MAX_AREA = 0.5
INVALID = -1
BASE_SHORT_SIDE = 16


def saturation(images: torch.Tensor) -> torch.Tensor:
    mx = images.amax(-1)
    return (mx - images.amin(-1)) / mx.clamp_min(1e-4)


def object_mask(images: torch.Tensor) -> torch.Tensor:
    return saturation(images) > SAT_THRESHOLD


def count_objects(images: torch.Tensor, min_area: float = MIN_AREA, at: tuple[int, int] | None = None) -> list[int]:
    """Connected components (8-connected) of the saturation mask covering >= min_area of the image.

    ``at``: (H, W) to area-downsample to before counting (the base size: resize-invariant count);
    None counts at the image's own resolution.
    A sample whose saturated region has a component over MAX_AREA (a saturated background)
    counts as INVALID (-1), which never equals a scene's object count.
    """
    if at is not None and tuple(images.shape[1:3]) != tuple(at):
        images = downsample(images, *at)
    counts = []
    for m in object_mask(images).cpu().numpy():
        lab, n = scipy.ndimage.label(m, structure=np.ones((3, 3)))
        if n == 0:
            counts.append(0)
            continue
        areas = np.bincount(lab.ravel())[1:]
        if (areas > MAX_AREA * m.size).any():
            counts.append(INVALID)
            continue
        counts.append(int((areas >= min_area * m.size).sum()))
    return counts


def caption_colour_match(images: torch.Tensor, caption: torch.Tensor, at: tuple[int, int]) -> float:
    """Share of samples whose object (the saturated pixels at the base size ``at``) has the colour
    class of its caption (scenes.captions); a sample with no saturated pixel does not match."""
    from .scenes import SHAPES, colour_class

    small = downsample(images, *at) if tuple(images.shape[1:3]) != tuple(at) else images
    mask = object_mask(small).float()
    area = mask.sum((1, 2))
    mean = (small * mask[..., None]).sum((1, 2)) / area.clamp_min(1)[:, None]
    want = caption[:, len(SHAPES):].argmax(-1)
    return float(((colour_class(mean) == want) & (area > 0)).float().mean())


def composition(images: torch.Tensor, expected: int = 1, min_area: float = MIN_AREA,
                at: tuple[int, int] | None = None) -> float:
    """Share of samples with exactly ``expected`` objects (``at``: count at that size, see count_objects)."""
    c = count_objects(images, min_area, at)
    return float(np.mean([x == expected for x in c]))


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a binomial proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / d
    return (max(0.0, c - h), min(1.0, c + h))


def bootstrap_mean(values, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean of per-sample values."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(reps, len(v)))].mean(1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def layout_mask(images: torch.Tensor, at: tuple[int, int]) -> torch.Tensor:
    """Object layout at size ``at``: the object mask's coverage, area-downsampled, > 0.5 (N, h, w) bool."""
    m = object_mask(images).float()[:, None]
    if tuple(m.shape[-2:]) != tuple(at):
        m = F.interpolate(m, size=at, mode="area")
    return m[:, 0] > 0.5


def pivot_iou(images: torch.Tensor, base: torch.Tensor) -> list[float]:
    """Per sample: IoU of the output's layout (at the base size) with the base sample's layout.

    Both empty counts as 1 (agreement), one empty as 0.
    """
    a = layout_mask(images, tuple(base.shape[1:3]))
    b = layout_mask(base, tuple(base.shape[1:3]))
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).tolist()


def _blur_down(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    k2 = (k[:, None] * k[None]).to(x)[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k2, groups=x.shape[1])[..., ::2, ::2]


def laplacian_pyramid(images: torch.Tensor, min_side: int = 8) -> list[torch.Tensor]:
    """Levels finest first; the last (coarsest) level is the low-pass residual."""
    x = images.movedim(-1, 1).float()
    levels = []
    while min(x.shape[-2:]) > min_side:
        low = _blur_down(x)
        up = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
        levels.append(x - up)
        x = low
    levels.append(x)
    return levels


def _patches(level: torch.Tensor, n_per_image: int, g: torch.Generator, size: int = 7) -> torch.Tensor:
    """n_per_image random size x size patches per image, flattened to (N * n, C * size * size)."""
    N, C, H, W = level.shape
    ys = torch.randint(0, H - size + 1, (N, n_per_image), generator=g)
    xs = torch.randint(0, W - size + 1, (N, n_per_image), generator=g)
    d = torch.arange(size)
    yy = (ys[..., None, None] + d[:, None]).expand(-1, -1, size, size)
    xx = (xs[..., None, None] + d[None, :]).expand(-1, -1, size, size)
    nn_ = torch.arange(N)[:, None, None, None].expand_as(yy)
    out = level.movedim(1, -1)[nn_, yy, xx]  # (N, n, size, size, C)
    return out.reshape(N * n_per_image, -1)


def _swd(a: torch.Tensor, b: torch.Tensor, g: torch.Generator, dirs: int = 256, repeats: int = 4) -> float:
    n = min(len(a), len(b))
    a, b = a[torch.randperm(len(a), generator=g)[:n]], b[torch.randperm(len(b), generator=g)[:n]]
    mean, std = torch.cat([a, b]).mean(0), torch.cat([a, b]).std(0).clamp_min(1e-6)
    a, b = (a - mean) / std, (b - mean) / std
    vals = []
    for _ in range(repeats):
        d = torch.randn(a.shape[1], dirs, generator=g)
        d = d / d.norm(dim=0, keepdim=True)
        pa, pb = torch.sort(a @ d, 0)[0], torch.sort(b @ d, 0)[0]
        vals.append((pa - pb).abs().mean().item())
    return float(np.mean(vals))


def swd_levels(x: torch.Tensor, y: torch.Tensor, seed: int = 0, n_per_image: int = 64) -> list[tuple[int, float]]:
    """[(short side of level, SWD x1e3)] for each Laplacian level, finest first."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for lx, ly in zip(laplacian_pyramid(x), laplacian_pyramid(y), strict=True):
        out.append((min(lx.shape[-2:]), 1e3 * _swd(_patches(lx, n_per_image, g), _patches(ly, n_per_image, g), g)))
    return out


def fidelity(generated: torch.Tensor, real: torch.Tensor, seed: int = 0) -> dict:
    """Coarse (levels with short side <= base) and finest-level SWD to real renders."""
    lv = swd_levels(generated, real, seed)
    coarse = [v for s, v in lv if s <= BASE_SHORT_SIDE]
    return {"swd_coarse": float(np.mean(coarse)), "swd_fine": lv[0][1]}


def downsample(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    x = F.interpolate(images.movedim(-1, 1), size=(height, width), mode="area")
    return x.movedim(1, -1)


def base_consistency(generated: torch.Tensor, base: torch.Tensor, seed: int = 0) -> float:
    """SWD (mean over levels) between generated-then-downsampled images and base-size samples."""
    small = downsample(generated, base.shape[1], base.shape[2])
    return float(np.mean([v for _, v in swd_levels(small, base, seed)]))


def _high_band_in_objects(images: torch.Tensor, base_hw: tuple[int, int],
                          erode: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(band (N, C, H, W): the image minus its base-size area-downsample re-upsampled, i.e. what only
    the high resolution holds; mask (N, H, W): the object mask eroded by ``erode`` pixels)."""
    H, W = images.shape[1:3]
    x = images.movedim(-1, 1)
    low = F.interpolate(F.interpolate(x, size=base_hw, mode="area"), size=(H, W), mode="bilinear",
                        align_corners=False)
    m = object_mask(images).float()[:, None]
    k = 2 * erode + 1
    m = 1 - F.max_pool2d(1 - m, k, stride=1, padding=erode)  # erosion
    return x - low, m[:, 0]


def detail_energy(images: torch.Tensor, base_hw: tuple[int, int], erode: int = 2) -> float:
    """Mean squared high-res-only band (above base Nyquist) inside eroded object masks."""
    band, m = _high_band_in_objects(images, base_hw, erode)
    band = band.square().mean(1)
    return float((band * m).sum() / m.sum().clamp_min(1.0))


def detail_ratio(generated: torch.Tensor, real: torch.Tensor, base_hw: tuple[int, int]) -> float:
    return detail_energy(generated, base_hw) / max(detail_energy(real, base_hw), 1e-12)


def stripe_energy(images: torch.Tensor, base_hw: tuple[int, int], periods: float, erode: int = 2) -> float:
    """Energy of the scenes' own texture inside objects: the high-res-only band (as ``detail_energy``),
    least-squares fitted per image by the stripe wave ``cos / sin(2 pi periods (x + y) / short side)``
    inside the eroded object mask; mean squared fit. Noise of the same energy has almost no component
    at that one frequency, so this counts learned texture, not grain (``detail_energy`` counts both)."""
    N, H, W = images.shape[:3]
    band, m = _high_band_in_objects(images, base_hw, erode)
    band = band.mean(1)  # signed: the stripes modulate every channel the same way
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    arg = 2 * math.pi * periods * (xs + ys) / min(H, W)
    waves = torch.stack([torch.cos(arg), torch.sin(arg)])  # (2, H, W)
    total = 0.0
    for i in range(N):
        w = waves[:, m[i] > 0]  # (2, P) inside the mask
        if w.shape[1] < 4:
            continue
        b = band[i][m[i] > 0]
        gram = w @ w.T + 1e-6 * torch.eye(2)
        coef = torch.linalg.solve(gram, w @ b)
        total += float((coef @ w).square().mean())
    return total / max(N, 1)


def stripe_ratio(generated: torch.Tensor, real: torch.Tensor, base_hw: tuple[int, int], periods: float) -> float:
    return stripe_energy(generated, base_hw, periods) / max(stripe_energy(real, base_hw, periods), 1e-12)
