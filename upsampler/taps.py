"""Where the time-aware feature upsamplers read and write: taps derived from the UNet's structure.

A tap is the output of one UNet block (ComfyUI names: ``("input", i)`` or ``("middle", 0)``).
Rule (the official code taps the outputs of diffusers' down blocks and mid block): the outputs of
the down-block boundaries -- every input block that is a Downsample, plus the last input block --
and the middle block. When that gives more than ``max_taps`` taps, the last input block is
dropped (it has the same shape as the middle block). SDXL: input 3, 6, 8 + middle (320, 640,
1280, 1280). SD1.x/2.x: input 3, 6, 9 + middle (320, 640, 1280, 1280).

Duck-typed on ``input_blocks`` / ``middle_block`` and layer class names, so this module stays
pure torch.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Tap:
    """One tap: the block whose output is read (pivot) and added to (main path)."""

    block: tuple[str, int]
    channels: int
    downscale: int

    def to_json(self) -> dict:
        return {"block": [self.block[0], int(self.block[1])], "channels": int(self.channels),
                "downscale": int(self.downscale)}

    @classmethod
    def from_json(cls, d: dict) -> Tap:
        return cls(block=(str(d["block"][0]), int(d["block"][1])), channels=int(d["channels"]),
                   downscale=int(d["downscale"]))


class NotAUNetError(TypeError):
    """The model has no ``input_blocks``/``middle_block`` (a DiT, Flux, ...)."""


def _is_downsample(layer: nn.Module) -> bool:
    name = type(layer).__name__
    return name == "Downsample" or (name.endswith("ResBlock") and bool(getattr(layer, "down", False)))


def _block_channels(block: nn.Module) -> int:
    """Output channels of a block: the last layer that declares ``out_channels`` (attention keeps width)."""
    layers = list(block) if isinstance(block, nn.Sequential) else [block]
    for layer in reversed(layers):
        ch = getattr(layer, "out_channels", None)
        if isinstance(ch, int):
            return ch
    for layer in reversed(layers):
        ch = getattr(layer, "in_channels", None)
        if isinstance(ch, int):
            return ch
    raise NotAUNetError(f"cannot tell the output channels of block {type(block).__name__}")


def is_unet(unet: object) -> bool:
    """True when ``unet`` has the SD-style UNet layout this module understands."""
    return isinstance(getattr(unet, "input_blocks", None), nn.ModuleList) and \
        isinstance(getattr(unet, "middle_block", None), nn.Module)


def derive_taps(unet: nn.Module, max_taps: int = 4) -> list[Tap]:
    """The taps of an SD-style UNet (see the module docstring for the rule)."""
    if not is_unet(unet):
        raise NotAUNetError(f"{type(unet).__name__} is not an SD-style UNet (no input_blocks/middle_block)")
    blocks = list(unet.input_blocks)
    taps: list[Tap] = []
    downscale = 1
    for i, block in enumerate(blocks):
        layers = list(block) if isinstance(block, nn.Sequential) else [block]
        down = any(_is_downsample(layer) for layer in layers)
        if down:
            downscale *= 2
        if down or i == len(blocks) - 1:
            taps.append(Tap(("input", i), _block_channels(block), downscale))
    taps.append(Tap(("middle", 0), _block_channels(unet.middle_block), downscale))
    if len(taps) > max_taps and taps[-2].block == ("input", len(blocks) - 1):
        del taps[-2]
    return taps[-max_taps:] if len(taps) > max_taps else taps


def emb_dim(unet: nn.Module) -> int:
    """Width of the UNet's time embedding ``emb`` (the last Linear of ``time_embed``)."""
    linears = [m for m in unet.time_embed.modules() if hasattr(m, "out_features")]
    return int(linears[-1].out_features)
