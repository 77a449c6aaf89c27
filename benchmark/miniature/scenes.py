"""Procedural scenes with ground truth, renderable at any resolution from the same parameters.

A scene is one saturated object (disc, square or triangle) on a low-saturation linear gradient.
Coordinates are in units of the image's *short side*, so one scene renders undistorted at
16x16, 32x32, 64x64 or 16x24 / 32x48. Rendering is anti-aliased by box-filter supersampling.

The detail band: inside the object the brightness is modulated by diagonal stripes whose period
is ``1 / STRIPE_FREQ`` of the short side, i.e. exactly one pixel at the base size (16 px short
side). A box filter over one pixel integrates such a stripe to its mean, so at 16x16 the texture
is averaged away completely (the base model never sees it); at 32 it has a 2-pixel period and at
64 a 4-pixel period. Brightness modulation is multiplicative, so HSV saturation (what the object
counter thresholds) is unchanged by it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BASE_SHORT_SIDE = 16      # the base model's size (16x16; 16x24 non-square), chosen to train on 2 shared cores
STRIPE_FREQ = 16          # stripe periods per short side: 1 px at 16, 2 px at 32, 4 px at 64
STRIPE_AMP = 0.3          # brightness modulation inside objects (x (1 +- 0.3))
STRIPE_PHASE = math.pi / 2  # cosine stripes (see render)
SHAPES = ("disc", "square", "triangle")
#: Colour classes of the caption: the object's hue to the nearest of six (hue 0 = red).
COLOURS = ("red", "yellow", "green", "cyan", "blue", "magenta")
#: Caption vector: one-hot shape then one-hot colour; all zeros is the null (dropped) caption.
CAPTION_DIM = len(SHAPES) + len(COLOURS)


@dataclass
class Scenes:
    """Parameters of a batch of scenes (one object each). All tensors have leading dim N."""

    shape: torch.Tensor      # (N,) long: index into SHAPES
    centre: torch.Tensor     # (N, 2) float: (x, y) in short-side units
    size: torch.Tensor       # (N,) float: object extent in short-side units (diameter / side)
    angle: torch.Tensor      # (N,) float: rotation of squares/triangles (radians)
    colour: torch.Tensor     # (N, 3) saturated object colour
    bg_a: torch.Tensor       # (N, 3) background colour at one end of the gradient
    bg_b: torch.Tensor       # (N, 3) background colour at the other end
    bg_dir: torch.Tensor     # (N,) gradient direction (radians)
    aspect: float            # width / height of the canvas the scenes were drawn for

    def __len__(self) -> int:
        return int(self.shape.shape[0])

    def take(self, idx) -> Scenes:
        """A sub-batch (index tensor or slice)."""
        f = {k: v[idx] for k, v in self.__dict__.items() if isinstance(v, torch.Tensor)}
        return Scenes(aspect=self.aspect, **f)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], -1)
    f = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return v[..., None] - v[..., None] * s[..., None] * f


def sample_scenes(n: int, seed: int, aspect: float = 1.0) -> Scenes:
    """Draw n scenes for a canvas of width/height ``aspect`` (seeded, CPU generator)."""
    g = torch.Generator().manual_seed(seed)
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    w_units, h_units = max(aspect, 1.0), max(1.0 / aspect, 1.0)
    size = 0.25 + 0.20 * u(n)
    half = size / 2 * 1.05
    cx = half + (w_units - 2 * half) * u(n)
    cy = half + (h_units - 2 * half) * u(n)
    colour = _hsv_to_rgb(u(n), 0.75 + 0.25 * u(n), 0.55 + 0.2 * u(n))
    bg_a = _hsv_to_rgb(u(n), 0.15 * u(n), 0.35 + 0.5 * u(n))
    bg_b = _hsv_to_rgb(u(n), 0.15 * u(n), 0.35 + 0.5 * u(n))
    return Scenes(shape=torch.randint(0, len(SHAPES), (n,), generator=g), centre=torch.stack([cx, cy], -1),
                  size=size, angle=u(n) * 2 * math.pi, colour=colour, bg_a=bg_a, bg_b=bg_b,
                  bg_dir=u(n) * 2 * math.pi, aspect=aspect)


def _inside(sc: Scenes, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean object mask at sample points x, y (N, P) in short-side units."""
    dx = x - sc.centre[:, 0:1]
    dy = y - sc.centre[:, 1:2]
    r = sc.size[:, None] / 2
    ca, sa = torch.cos(sc.angle)[:, None], torch.sin(sc.angle)[:, None]
    rx, ry = ca * dx + sa * dy, -sa * dx + ca * dy
    disc = dx * dx + dy * dy <= r * r
    square = (rx.abs() <= r * 0.8) & (ry.abs() <= r * 0.8)
    tri = torch.ones_like(disc)
    for k in range(3):  # equilateral triangle with circumradius r: three half-planes
        a = 2 * math.pi * k / 3
        tri &= (math.cos(a) * rx + math.sin(a) * ry) <= r / 2
    shape = sc.shape[:, None]
    return torch.where(shape == 0, disc, torch.where(shape == 1, square, tri))


def render(sc: Scenes, height: int, width: int, supersample: int = 4, detail: bool = True,
           chunk: int = 64, phase: float = STRIPE_PHASE) -> torch.Tensor:
    """Render to a ComfyUI IMAGE (N, H, W, 3) in 0..1; box-filtered over ss x ss samples per pixel.

    ``phase`` of the stripes: the default (cosine) puts pixel centres at 2x the base size on the
    stripes' crests; with phase 0 they sit on zero crossings there and the band vanishes at 4x
    pixels. train_base.py renders with this default phase too (the first miniature used phase 0; at
    the base size the two differ only in object-edge pixels).
    """
    short = min(height, width)
    ss = supersample
    offs = (torch.arange(ss, dtype=torch.float32) + 0.5) / ss
    ys = (torch.arange(height, dtype=torch.float32)[:, None] + offs[None]).reshape(-1) / short
    xs = (torch.arange(width, dtype=torch.float32)[:, None] + offs[None]).reshape(-1) / short
    Y, X = torch.meshgrid(ys, xs, indexing="ij")
    X, Y = X.reshape(1, -1), Y.reshape(1, -1)
    outs = []
    for i in range(0, len(sc), chunk):
        s = sc.take(slice(i, i + chunk))
        n = len(s)
        d = torch.stack([torch.cos(s.bg_dir), torch.sin(s.bg_dir)], -1)
        t = (X * d[:, 0:1] + Y * d[:, 1:2])
        t = (t - t.amin(1, keepdim=True)) / (t.amax(1, keepdim=True) - t.amin(1, keepdim=True) + 1e-6)
        bg = s.bg_a[:, None] * (1 - t[..., None]) + s.bg_b[:, None] * t[..., None]
        obj = s.colour[:, None].expand(n, X.shape[1], 3)
        if detail:
            stripe = torch.sin(2 * math.pi * STRIPE_FREQ * (X + Y) + phase).expand(n, -1)
            obj = obj * (1 + STRIPE_AMP * stripe[..., None])
        m = _inside(s, X.expand(n, -1), Y.expand(n, -1))[..., None]
        img = torch.where(m, obj, bg).reshape(n, height, ss, width, ss, 3).mean((2, 4))
        outs.append(img.clamp(0, 1))
    return torch.cat(outs)


def render_mask(sc: Scenes, height: int, width: int, supersample: int = 4) -> torch.Tensor:
    """Anti-aliased object coverage (N, H, W) in 0..1 — the ground-truth object mask."""
    short = min(height, width)
    offs = (torch.arange(supersample, dtype=torch.float32) + 0.5) / supersample
    ys = (torch.arange(height, dtype=torch.float32)[:, None] + offs[None]).reshape(-1) / short
    xs = (torch.arange(width, dtype=torch.float32)[:, None] + offs[None]).reshape(-1) / short
    Y, X = torch.meshgrid(ys, xs, indexing="ij")
    n = len(sc)
    m = _inside(sc, X.reshape(1, -1).expand(n, -1), Y.reshape(1, -1).expand(n, -1)).float()
    return m.reshape(n, height, supersample, width, supersample).mean((2, 4))


def colour_class(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3) RGB -> (N,) index into COLOURS: the hue (HSV) rounded to the nearest sixth."""
    mx, arg = rgb.max(-1)
    d = (mx - rgb.min(-1).values).clamp_min(1e-6)
    r, g, b = rgb.unbind(-1)
    h = torch.where(arg == 0, ((g - b) / d) % 6, torch.where(arg == 1, (b - r) / d + 2, (r - g) / d + 4))
    return torch.round(h).long() % len(COLOURS)


def captions(sc: Scenes) -> torch.Tensor:
    """The scenes' captions, (N, CAPTION_DIM): one-hot shape class and one-hot colour class."""
    out = torch.zeros(len(sc), CAPTION_DIM)
    out[torch.arange(len(sc)), sc.shape] = 1.0
    out[torch.arange(len(sc)), len(SHAPES) + colour_class(sc.colour)] = 1.0
    return out


def to_latent(images: torch.Tensor) -> torch.Tensor:
    """IMAGE (N,H,W,3) in 0..1 -> model 'latent' (N,3,H,W) in -1..1 (pixel space is the latent)."""
    return images.movedim(-1, 1) * 2 - 1


def from_latent(latent: torch.Tensor) -> torch.Tensor:
    """Model latent (N,3,H,W) -> IMAGE (N,H,W,3) clamped to 0..1."""
    return ((latent.movedim(1, -1) + 1) / 2).clamp(0, 1)
