"""Draw a training-loss curve as an image (numpy + PIL only, no plotting library)."""
from __future__ import annotations

import math

import numpy as np
import torch


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over ``window`` values (same length as ``values``)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def draw_loss_curve(losses: list[float], width: int = 512, height: int = 256) -> torch.Tensor:
    """A ComfyUI IMAGE ``(1, height, width, 3)`` in 0..1: raw loss (light) and its moving mean (dark).

    Non-finite values are skipped. An empty list gives a blank plot with a note.
    """
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 48, width - 12, 16, height - 24
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    finite = [v for v in losses if math.isfinite(v)]
    if not finite:
        draw.text((left + 8, top + 8), "no loss values yet", fill=(0, 0, 0))
    else:
        lo, hi = min(finite), max(finite)
        span = hi - lo or 1.0
        n = max(len(losses) - 1, 1)

        def xy(i: int, v: float) -> tuple[float, float]:
            return left + (right - left) * i / n, bottom - (bottom - top) * (v - lo) / span

        for series, colour in ((losses, (150, 180, 230)), (moving_average(losses, max(1, len(losses) // 20)), (20, 40, 160))):
            pts = [xy(i, v) for i, v in enumerate(series) if math.isfinite(v)]
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=1 if series is losses else 2)
            elif pts:
                draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=colour)
        draw.text((4, top), f"{hi:.3g}", fill=(0, 0, 0))
        draw.text((4, bottom - 10), f"{lo:.3g}", fill=(0, 0, 0))
        draw.text((left, bottom + 6), f"step 1 .. {len(losses)}   loss (light) / moving mean (dark)", fill=(0, 0, 0))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).unsqueeze(0)
