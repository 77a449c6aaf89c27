"""Time-aware feature upsamplers (the official architecture, paper Eq. 7-8) and the set of N of them.

Each upsampler maps a pivot feature (B, C, h, w) and the UNet's time embedding ``emb`` (B, E)
to (B, C, 2h, 2w). Both variants are EXACTLY a nearest x2 upsample at initialisation (their
last layer is zero-initialised and the skip is the identity / nearest upsample), so a fresh set
leaves the model's features of the pivot unchanged apart from the upsampling.

Every module takes ``operations``: the namespace its Conv2d/Linear/GroupNorm classes come from
(``torch.nn`` by default, so this package stays pure torch; ComfyUI's ``comfy.ops`` classes when
the set is run by ComfyUI's model management, as ``openaimodel.UNetModel`` takes them).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .renoise import DEFAULT_K
from .taps import Tap

FORMAT_VERSION = 1
#: The paper's switch-off point: the upsamplers act while the timestep (of 1000) is above 100.
DEFAULT_END_TIMESTEP = 100.0


def _groups(channels: int) -> int:
    """GroupNorm groups: 32 as in the UNet, or the largest divisor of ``channels`` below it."""
    return math.gcd(32, channels)


def up2(x: torch.Tensor) -> torch.Tensor:
    """Nearest x2 upsample (the identity path of every upsampler)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class TimeAwareResBlock(nn.Module):
    """A guided-diffusion ResBlock without scale-shift norm: emb -> SiLU -> Linear added after conv 1.

    Parameter names follow the official layout (``in_layers.0/2``, ``emb_layers.1``,
    ``out_layers.0/3``) so the converter maps keys one to one.
    """

    def __init__(self, channels: int, emb_dim: int, up: bool, zero_out: bool = True, operations=nn):
        super().__init__()
        ops = operations
        self.up = up
        self.in_layers = nn.Sequential(ops.GroupNorm(_groups(channels), channels), nn.SiLU(),
                                       ops.Conv2d(channels, channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), ops.Linear(emb_dim, channels))
        self.out_layers = nn.Sequential(ops.GroupNorm(_groups(channels), channels), nn.SiLU(),
                                        nn.Dropout(0.0), ops.Conv2d(channels, channels, 3, padding=1))
        if zero_out:
            nn.init.zeros_(self.out_layers[-1].weight)
            nn.init.zeros_(self.out_layers[-1].bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.up:
            h = up2(self.in_layers[1](self.in_layers[0](x)))
            x = up2(x)
            h = self.in_layers[2](h)
        else:
            h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return x + self.out_layers(h)


class TimeAwareUpsampler(nn.Module):
    """The official upsampler: ResBlock(up=True) then ResBlock, both time-aware (about 36 M at C=1280)."""

    def __init__(self, channels: int, emb_dim: int, size: int = 0, operations=nn):
        super().__init__()
        self.blocks = nn.ModuleList([TimeAwareResBlock(channels, emb_dim, up=True, operations=operations),
                                     TimeAwareResBlock(channels, emb_dim, up=False, operations=operations)])

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, emb)
        return x


class LightUpsampler(nn.Module):
    """Bottleneck variant: 1x1 C->c, the official two time-aware ResBlocks at width c, 1x1 c->C
    (zero-initialised), plus a nearest x2 skip. ``size`` is the bottleneck width c."""

    def __init__(self, channels: int, emb_dim: int, size: int = 56, operations=nn):
        super().__init__()
        width = max(1, min(int(size), channels))
        self.proj_in = operations.Conv2d(channels, width, 1)
        self.blocks = nn.ModuleList([TimeAwareResBlock(width, emb_dim, up=True, zero_out=False, operations=operations),
                                     TimeAwareResBlock(width, emb_dim, up=False, zero_out=False, operations=operations)])
        self.proj_out = operations.Conv2d(width, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.proj_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return up2(x) + self.proj_out(h)


#: Variant name -> (factory(channels, emb_dim, size, operations=...), default size, what size means).
VARIANTS: dict[str, tuple[Callable[..., nn.Module], int, str]] = {
    "official": (TimeAwareUpsampler, 0, "unused"),
    "light": (LightUpsampler, 56, "bottleneck width"),
}


@dataclass
class UpsamplerInfo:
    """What a set is and what it was trained for (travels in the file's metadata)."""

    family: str
    taps: list[Tap]
    emb_dim: int
    variant: str = "official"
    size: int = 0
    K: float = DEFAULT_K
    end_timestep: float = DEFAULT_END_TIMESTEP
    scale: float = 2.0
    steps: int = 0
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["taps"] = [t.to_json() for t in self.taps]
        return d

    @classmethod
    def from_json(cls, d: dict) -> UpsamplerInfo:
        d = dict(d)
        d["taps"] = [Tap.from_json(t) for t in d["taps"]]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


class UpsamplerSet(nn.Module):
    """N time-aware upsamplers, one per tap (``ups[i]`` serves ``taps[i]``); layers from ``operations``."""

    def __init__(self, info: UpsamplerInfo, operations=nn):
        super().__init__()
        if info.variant not in VARIANTS:
            raise ValueError(f"unknown upsampler variant {info.variant!r}; known: {sorted(VARIANTS)}")
        factory, default_size, _ = VARIANTS[info.variant]
        if not info.size:
            info.size = default_size
        self.info = info
        self.ups = nn.ModuleList([factory(t.channels, info.emb_dim, info.size, operations=operations)
                                  for t in info.taps])

    @property
    def taps(self) -> list[Tap]:
        return self.info.taps

    @classmethod
    def create(cls, taps: list[Tap], emb_dim: int, family: str, variant: str = "official",
               size: int = 0, **info) -> UpsamplerSet:
        """A freshly initialised set (exactly nearest x2 per tap)."""
        return cls(UpsamplerInfo(family=family, taps=list(taps), emb_dim=emb_dim, variant=variant,
                                 size=size, **info))

    def forward(self, index: int, feature: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.ups[index](feature, emb)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def parameter_counts(taps: list[Tap], emb_dim: int, sizes: dict[str, int] | None = None) -> dict[str, int]:
    """Parameter count of each variant for the given taps (built on the meta device: no memory)."""
    out = {}
    for name, (_, default, _) in VARIANTS.items():
        size = (sizes or {}).get(name, default)
        with torch.device("meta"):
            out[name] = UpsamplerSet.create(taps, emb_dim, "count", name, size).num_params()
    return out
