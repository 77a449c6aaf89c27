"""Score one method's samples on one seed set, and pool the seed sets (95% intervals).

Per seed set: object counts (at the base size), pivot IoU per sample (rows that start from the base
sample), SWD coarse / fine to real renders, base consistency, detail and stripe ratios, wall and CPU seconds.
Pooled over the sets: composition k/n with a Wilson interval, mean pivot IoU with a bootstrap
interval, SWD / consistency / detail / stripes as the mean over sets plus each set's value.
"""
from __future__ import annotations

import numpy as np
import torch

from . import metrics as mt
from .scenes import STRIPE_FREQ


def score_set(img: torch.Tensor, *, base_img: torch.Tensor, real: torch.Tensor, real_ref: torch.Tensor,
              seed: int, uses_base: bool, times: tuple[float, float] | None = None, fidelity: bool = True,
              caption: torch.Tensor | None = None) -> dict:
    """Metrics of one seed set's images (IMAGE tensors 0..1); ``caption``: the captions the samples
    were asked for (captioned model), scored as the share whose object has the caption's colour."""
    base_hw = tuple(base_img.shape[1:3])
    r = {"counts": mt.count_objects(img, at=base_hw), "n": int(img.shape[0]), "seed": seed}
    if uses_base:
        r["iou"] = mt.pivot_iou(img, base_img)
    if fidelity:
        r.update(mt.fidelity(img, real_ref, seed=seed))
        r["base_consistency"] = mt.base_consistency(img, base_img, seed=seed)
        if tuple(img.shape[1:3]) != base_hw:
            r["detail"] = mt.detail_ratio(img, real, base_hw)
            r["stripes"] = mt.stripe_ratio(img, real, base_hw, STRIPE_FREQ)
    if caption is not None:
        r["caption_match"] = mt.caption_colour_match(img, caption, base_hw)
    if times is not None:
        r["seconds"], r["cpu_seconds"] = times
    return r


def pool(per_set: list[dict], expected: int = 1) -> dict:
    """Pool one row's per-set scores."""
    counts = [c for s in per_set for c in s["counts"]]
    k, n = sum(c == expected for c in counts), len(counts)
    out = {"composition": k / n, "composition_ci": mt.wilson(k, n), "n": n,
           "composition_values": [int(c == expected) for c in counts],  # per sample: paired comparisons
           "composition_sets": [float(np.mean([c == expected for c in s["counts"]])) for s in per_set]}
    if "iou" in per_set[0]:
        ious = [v for s in per_set for v in s["iou"]]
        out["pivot_iou"], out["pivot_iou_ci"] = float(np.mean(ious)), mt.bootstrap_mean(ious)
        out["pivot_iou_sets"] = [float(np.mean(s["iou"])) for s in per_set]
        out["pivot_iou_values"] = ious  # per sample, seed order: paired comparisons between rows
    for key in ("swd_coarse", "swd_fine", "base_consistency", "detail", "stripes", "caption_match"):
        if key in per_set[0]:
            vals = [s[key] for s in per_set]
            out[key], out[key + "_sets"] = float(np.mean(vals)), vals
    if "seconds" in per_set[0]:
        out["seconds"] = float(sum(s["seconds"] for s in per_set))
        out["cpu_seconds"] = float(sum(s["cpu_seconds"] for s in per_set))
    return out


def paired_iou_gain(a: dict, b: dict) -> tuple[float, tuple[float, float]]:
    """Mean per-sample pivot IoU of row ``a`` minus row ``b`` on the same seeds, with a bootstrap 95%
    interval of that mean: the same-seed comparison, tighter than two rows' separate intervals."""
    return paired_gain(a, b, "pivot_iou_values")


def paired_gain(a: dict, b: dict, key: str) -> tuple[float, tuple[float, float]]:
    """Paired same-seed difference of the per-sample values ``key`` (see paired_iou_gain)."""
    va, vb = a[key], b[key]
    if len(va) != len(vb):
        raise ValueError(f"paired comparison needs the same samples ({len(va)} vs {len(vb)})")
    d = [x - y for x, y in zip(va, vb, strict=True)]
    return float(np.mean(d)), mt.bootstrap_mean(d)
