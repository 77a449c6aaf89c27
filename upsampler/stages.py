"""Scale decomposition: how many cascade stages reach a target size, and each stage's size.

The paper (Sec. 3.1) uses R = ceil(log4(target_pixels / base_pixels)) stages, each at most 4x
the pixels (2x per side) of the previous one, e.g. 512 -> 1024 -> 2048. Every stage but the
last is a full paper stage (4x the pixels, the step K = 700 was chosen for); the last stage
takes the remainder, so 512 -> 1536 is two stages of unequal scale: 512 -> 1024 (x2 per side)
-> 1536 (x1.5). For a target whose aspect ratio differs from the base, each side grows in
proportion to its own log factor, so every full stage still multiplies the pixels by 4.
Intermediate sizes are rounded down to a multiple of ``multiple`` pixels (8 for SD-family
VAEs; never below the previous stage), the last stage is exactly the target.
"""
from __future__ import annotations

import math


def num_stages(base_pixels: int, target_pixels: int) -> int:
    """R = ceil(log4(target / base)), with R >= 0 (0 when the target is not larger)."""
    if base_pixels <= 0 or target_pixels <= 0:
        raise ValueError("pixel counts must be positive")
    ratio = target_pixels / base_pixels
    if ratio <= 1.0:
        return 0
    # guard against float noise for exact powers of four (e.g. 16.000000000000004)
    return max(1, math.ceil(math.log(ratio, 4) - 1e-9))


def _floor_to(value: float, multiple: int) -> int:
    """``value`` rounded down to a multiple (tolerating float noise such as 1023.9999)."""
    return max(multiple, int(math.floor(value / multiple + 1e-6)) * multiple)


def plan_stages(base: tuple[int, int], target: tuple[int, int], multiple: int = 8) -> list[tuple[int, int]]:
    """Sizes ``(width, height)`` of each cascade stage after the base, ending exactly at ``target``.

    Every stage but the last multiplies the pixels by 4 (up to rounding down to ``multiple``);
    the last one ends exactly at ``target`` with the remaining factor (at most 4x).
    """
    bw, bh = base
    tw, th = target
    for name, v in (("base width", bw), ("base height", bh), ("target width", tw), ("target height", th)):
        if v <= 0 or v % multiple:
            raise ValueError(f"{name} {v} must be a positive multiple of {multiple} pixels")
    if tw < bw or th < bh:
        raise ValueError(f"target {tw}x{th} is smaller than the base {bw}x{bh} on one side; "
                         "Self-Cascade only goes up in size")
    r = num_stages(bw * bh, tw * th)
    log_ratio = math.log((tw * th) / (bw * bh)) if r else 1.0
    sizes: list[tuple[int, int]] = []
    prev = (bw, bh)
    for i in range(1, r + 1):
        if i == r:
            sizes.append((tw, th))
            break
        f = min(1.0, i * math.log(4.0) / log_ratio)  # share of the log factor done after stage i
        size = (_floor_to(bw * (tw / bw) ** f, multiple), _floor_to(bh * (th / bh) ** f, multiple))
        prev = (max(prev[0], size[0]), max(prev[1], size[1]))
        sizes.append(prev)
    return sizes
