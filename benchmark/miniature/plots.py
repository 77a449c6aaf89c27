"""Small line plots drawn with PIL (the host has no matplotlib): panels side by side, one legend."""
from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]
W, H, M = 360, 260, 46  # panel size and margin


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 2) if start + i * step <= hi + 1e-9]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.2f}".rstrip("0")


def panel(draw: ImageDraw.ImageDraw, x0: int, title: str, xlabel: str, series: dict[str, list[tuple[float, float]]],
          colours: dict[str, tuple], log_x: bool = False, y_range: tuple[float, float] | None = None) -> None:
    pts = [p for s in series.values() for p in s if p[1] == p[1]]
    if not pts:
        return
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    xs = [fx(p[0]) for p in pts]
    ys = [p[1] for p in pts]
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = y_range if y_range else (min(ys), max(ys))
    if yhi - ylo < 1e-9:
        ylo, yhi = ylo - 0.5, yhi + 0.5
    pad = 0.05 * (yhi - ylo)
    ylo, yhi = (ylo, yhi) if y_range else (ylo - pad, yhi + pad)
    if xhi - xlo < 1e-9:
        xlo, xhi = xlo - 1, xhi + 1

    def to_px(x, y):
        return (x0 + M + (fx(x) - xlo) / (xhi - xlo) * (W - M - 12),
                H - M + 10 - (y - ylo) / (yhi - ylo) * (H - M - 20))

    draw.text((x0 + M, 4), title, fill=(0, 0, 0))
    draw.rectangle([x0 + M, 10, x0 + W - 12, H - M + 10], outline=(120, 120, 120))
    for yt in _ticks(ylo, yhi):
        if ylo <= yt <= yhi:
            _, py = to_px(10 ** xlo if log_x else xlo, yt)
            draw.line([x0 + M - 3, py, x0 + M, py], fill=(0, 0, 0))
            draw.text((x0 + 4, py - 5), _fmt(yt), fill=(0, 0, 0))
    xvals = sorted({p[0] for p in pts})
    for xv in xvals:
        px, _ = to_px(xv, ylo)
        draw.line([px, H - M + 10, px, H - M + 14], fill=(0, 0, 0))
        draw.text((px - 8, H - M + 16), _fmt(xv), fill=(0, 0, 0))
    draw.text((x0 + M + (W - M) // 2 - 20, H - 16), xlabel, fill=(0, 0, 0))
    for name, s in series.items():
        s = sorted(p for p in s if p[1] == p[1])
        c = colours[name]
        xy = [to_px(*p) for p in s]
        if len(xy) > 1:
            draw.line(xy, fill=c, width=2)
        for px, py in xy:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=c)


def plot(path: Path, panels: list[dict], xlabel: str, log_x: bool = False) -> None:
    """``panels``: [{"title", "series": {name: [(x, y)]}, "y_range": optional}]; one legend below."""
    names = list(dict.fromkeys(n for p in panels for n in p["series"]))
    colours = {n: COLOURS[i % len(COLOURS)] for i, n in enumerate(names)}
    img = Image.new("RGB", (W * len(panels), H + 18 * ((len(names) + 2) // 3) + 6), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, p in enumerate(panels):
        panel(draw, i * W, p["title"], xlabel, p["series"], colours, log_x, p.get("y_range"))
    for i, n in enumerate(names):
        x, y = 10 + (i % 3) * 240, H + 4 + 18 * (i // 3)
        draw.rectangle([x, y + 3, x + 14, y + 11], fill=colours[n])
        draw.text((x + 20, y), n, fill=(0, 0, 0))
    img.save(path, optimize=True)
