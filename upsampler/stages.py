"""Scale decomposition: how many cascade stages reach a target size, and each stage's size.

The paper (Sec. 3.1) uses R = ceil(log4(target_pixels / base_pixels)) stages, each at most 4x
the pixels (2x per side) of the previous one, e.g. 512 -> 1024 -> 2048. For targets that are
not a power of 4 away, the stages share the remaining factor evenly in log space, so 512 ->
1536 is two stages of sqrt(3) per side (about 887 then 1536), never one larger than 4x pixels.
Every stage size is a multiple of ``multiple`` pixels (8 for SD-family VAEs).
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


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def plan_stages(base: tuple[int, int], target: tuple[int, int], multiple: int = 8) -> list[tuple[int, int]]:
    """Sizes ``(width, height)`` of each cascade stage after the base, ending exactly at ``target``.

    The width and height factors are split geometrically over R stages, so each stage
    multiplies the pixel count by the same amount (at most 4x).
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
    sizes = []
    for i in range(1, r + 1):
        if i == r:
            sizes.append((tw, th))
        else:
            f = i / r
            sizes.append((_round_to(bw * (tw / bw) ** f, multiple), _round_to(bh * (th / bh) ** f, multiple)))
    return sizes
